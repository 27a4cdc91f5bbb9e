// The browser's half of the passkey ceremonies on the Two-factor pages: asks
// the portal for options, hands them to navigator.credentials, and posts the
// authenticator's answer back. Binary fields travel as base64url, as the
// portal (py_webauthn) writes and reads them.
(function () {
  "use strict";

  function toBytes(b64url) {
    var b64 = b64url.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) b64 += "=";
    var raw = atob(b64);
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes.buffer;
  }

  function toB64url(buffer) {
    var bytes = new Uint8Array(buffer);
    var raw = "";
    for (var i = 0; i < bytes.length; i++) raw += String.fromCharCode(bytes[i]);
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function post(form, url, body) {
    var token = form.querySelector("[name=csrfmiddlewaretoken]").value;
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": token },
      body: JSON.stringify(body || {}),
    }).then(function (response) {
      return response.json().then(function (data) {
        if (!response.ok) throw new Error(data.detail || "refused");
        return data;
      });
    });
  }

  function descriptors(list) {
    return (list || []).map(function (c) {
      return Object.assign({}, c, { id: toBytes(c.id) });
    });
  }

  function show(problem) {
    var el = document.getElementById("passkey-problem");
    if (el) {
      el.textContent = problem;
      el.hidden = false;
    }
  }

  var register = document.getElementById("passkey-register");
  if (register) {
    register.addEventListener("submit", function (event) {
      event.preventDefault();
      post(register, register.dataset.options)
        .then(function (options) {
          options.challenge = toBytes(options.challenge);
          options.user.id = toBytes(options.user.id);
          options.excludeCredentials = descriptors(options.excludeCredentials);
          return navigator.credentials.create({ publicKey: options });
        })
        .then(function (credential) {
          var answer = {
            id: credential.id,
            rawId: toB64url(credential.rawId),
            type: credential.type,
            authenticatorAttachment: credential.authenticatorAttachment,
            clientExtensionResults: credential.getClientExtensionResults(),
            response: {
              clientDataJSON: toB64url(credential.response.clientDataJSON),
              attestationObject: toB64url(credential.response.attestationObject),
              transports: credential.response.getTransports ? credential.response.getTransports() : [],
            },
          };
          var name = register.querySelector("[name=name]").value;
          return post(register, register.dataset.url, { credential: answer, name: name });
        })
        .then(function (data) {
          window.location.assign(data.redirect);
        })
        .catch(function (error) {
          show("The passkey was not added: " + error.message);
        });
    });
  }

  var verify = document.getElementById("passkey-verify");
  if (verify) {
    verify.addEventListener("submit", function (event) {
      event.preventDefault();
      post(verify, verify.dataset.options)
        .then(function (options) {
          options.challenge = toBytes(options.challenge);
          options.allowCredentials = descriptors(options.allowCredentials);
          return navigator.credentials.get({ publicKey: options });
        })
        .then(function (credential) {
          var answer = {
            id: credential.id,
            rawId: toB64url(credential.rawId),
            type: credential.type,
            authenticatorAttachment: credential.authenticatorAttachment,
            clientExtensionResults: credential.getClientExtensionResults(),
            response: {
              clientDataJSON: toB64url(credential.response.clientDataJSON),
              authenticatorData: toB64url(credential.response.authenticatorData),
              signature: toB64url(credential.response.signature),
              userHandle: credential.response.userHandle ? toB64url(credential.response.userHandle) : null,
            },
          };
          return post(verify, verify.dataset.url, { credential: answer });
        })
        .then(function (data) {
          window.location.assign(data.redirect);
        })
        .catch(function (error) {
          show("The passkey was not accepted: " + error.message);
        });
    });
  }
})();
