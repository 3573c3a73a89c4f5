"""Helpers for the tests: servers, proxies and certificates. Importable; no tests here."""
