// The passkey ceremonies (WebAuthn) of /account ("Add a passkey") and /login ("Sign in
// with a passkey"): the only script of this server, served from its own static files.
// A button with data-passkey="register" or "login" asks the server for options
// (data-options), runs navigator.credentials.create() or .get(), and sends the answer
// back (data-verify), each time with the session's CSRF token (data-csrf) in the
// X-CSRF-Token header. The server's answer names where to go next. Buttons stay hidden
// where the browser has no WebAuthn; the password form works without any script.
"use strict";

(function () {
  function toBytes(text) {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(base64 + "===".slice((base64.length + 3) % 4));
    return Uint8Array.from(binary, (c) => c.charCodeAt(0)).buffer;
  }

  function toText(buffer) {
    let binary = "";
    new Uint8Array(buffer).forEach((b) => { binary += String.fromCharCode(b); });
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  async function post(url, csrf, body) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
    });
    let data = {};
    try { data = await response.json(); } catch (ignored) { /* not JSON: the status says it */ }
    if (!response.ok) {
      throw new Error(data.error_description || "The server refused (" + response.status + ").");
    }
    return data;
  }

  function descriptors(list) {
    return (list || []).map((c) => Object.assign({}, c, { id: toBytes(c.id) }));
  }

  async function register(options) {
    options.challenge = toBytes(options.challenge);
    options.user.id = toBytes(options.user.id);
    options.excludeCredentials = descriptors(options.excludeCredentials);
    const credential = await navigator.credentials.create({ publicKey: options });
    const response = credential.response;
    return {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      response: {
        clientDataJSON: toText(response.clientDataJSON),
        attestationObject: toText(response.attestationObject),
        transports: response.getTransports ? response.getTransports() : [],
      },
      clientExtensionResults: credential.getClientExtensionResults(),
      authenticatorAttachment: credential.authenticatorAttachment || undefined,
    };
  }

  async function signIn(options) {
    options.challenge = toBytes(options.challenge);
    options.allowCredentials = descriptors(options.allowCredentials);
    const credential = await navigator.credentials.get({ publicKey: options });
    const response = credential.response;
    return {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      response: {
        clientDataJSON: toText(response.clientDataJSON),
        authenticatorData: toText(response.authenticatorData),
        signature: toText(response.signature),
        userHandle: response.userHandle ? toText(response.userHandle) : null,
      },
      clientExtensionResults: credential.getClientExtensionResults(),
      authenticatorAttachment: credential.authenticatorAttachment || undefined,
    };
  }

  function say(button, text, failed) {
    const status = button.parentElement.querySelector("[data-passkey-status]");
    if (!status) return;
    status.textContent = text;
    status.className = failed ? "error" : "notice";
    status.hidden = false;
  }

  async function run(button) {
    const data = button.dataset;
    button.disabled = true;
    try {
      const options = await post(data.options, data.csrf, {});
      const credential = data.passkey === "register" ? await register(options) : await signIn(options);
      const body = { credential: credential };
      if (data.requestId) body.request_id = data.requestId;
      const result = await post(data.verify, data.csrf, body);
      if (result.redirect) {
        window.location.assign(result.redirect);
        return;
      }
      say(button, result.message || "Done.", false);
    } catch (error) {
      // NotAllowedError: the person cancelled, or the time ran out.
      say(button, error.name === "NotAllowedError" ? "The passkey request was cancelled or timed out." : error.message, true);
    } finally {
      button.disabled = false;
    }
  }

  if (!window.PublicKeyCredential || !navigator.credentials) return;
  document.querySelectorAll("button[data-passkey]").forEach((button) => {
    button.hidden = false;
    button.addEventListener("click", () => run(button));
  });
})();
