/* Confide Web Push handling for the service worker (NT4, NT1).
 *
 * The web app's service worker loads this file with importScripts('/static/push.js').
 * A push payload holds ids and a generic title only (never message text, names or the
 * practice's name); this file shows exactly that and fetches nothing into the
 * notification. Tapping it opens the conversation: /messages/{id} for team
 * members, /portal/{id} for clients and contacts (the server puts the right path in
 * the payload); the page then loads the messages with the person's own session.
 */
(function () {
  "use strict";

  var GENERIC_TITLE = "New secure message";
  var GENERIC_BODY = "Open Confide to read it.";
  var SAFE_PATH = /^\/(messages|portal)\/[0-9]{1,19}$/;

  function readPayload(event) {
    if (!event.data) {
      return {};
    }
    try {
      var data = event.data.json(); // the server pads with spaces; JSON.parse ignores them
      return data && typeof data === "object" ? data : {};
    } catch (e) {
      return {};
    }
  }

  function safeUrl(path) {
    // Only our own conversation paths: a payload can never send the user elsewhere.
    return typeof path === "string" && SAFE_PATH.test(path) ? path : "/";
  }

  self.addEventListener("push", function (event) {
    var data = readPayload(event);
    var id = typeof data.conversation_id === "number" ? data.conversation_id : null;
    var options = {
      body: GENERIC_BODY,
      tag: id !== null ? "conversation-" + id : "confide-new-message",
      renotify: true,
      data: { url: safeUrl(data.url) },
    };
    // The title and body are fixed here: whatever else a payload says is not shown.
    event.waitUntil(self.registration.showNotification(GENERIC_TITLE, options));
  });

  self.addEventListener("notificationclick", function (event) {
    event.notification.close();
    var url = safeUrl(event.notification.data && event.notification.data.url);
    var target = new URL(url, self.location.origin).href;
    event.waitUntil(
      // Windows this worker controls: navigate one to the conversation and focus it;
      // none (or navigation refused): a new window.
      self.clients.matchAll({ type: "window" }).then(function (windows) {
        for (var i = 0; i < windows.length; i++) {
          var w = windows[i];
          if (new URL(w.url).origin === self.location.origin && "navigate" in w) {
            return w
              .navigate(target)
              .then(function (c) {
                return c ? c.focus() : self.clients.openWindow(target);
              })
              .catch(function () {
                return self.clients.openWindow(target);
              });
          }
        }
        return self.clients.openWindow(target);
      })
    );
  });
})();
