/* Confide service worker: makes the app installable and shows a calm offline page.
   It never caches pages or API answers (they hold health information and are sent
   with Cache-Control: no-store); only the static shell is cached. Web Push (NT4) is
   handled in its own file: generic notifications only, tapping opens the conversation. */
"use strict";

importScripts("/static/push.js");

const SHELL = "confide-shell-v1";
const SHELL_FILES = [
  "/static/app.css",
  "/static/offline.html",
  "/static/icons/icon-192.png",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(SHELL).then((c) => c.addAll(SHELL_FILES)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== SHELL).map((k) => caches.delete(k))))
      .then(() => self.clients.claim())
  );
});

self.addEventListener("fetch", (event) => {
  const req = event.request;
  if (req.method !== "GET" || new URL(req.url).origin !== self.location.origin) {
    return;
  }
  if (req.mode === "navigate") {
    // Pages always come from the network; offline, the shell's offline page.
    event.respondWith(fetch(req).catch(() => caches.match("/static/offline.html")));
    return;
  }
  if (SHELL_FILES.includes(new URL(req.url).pathname)) {
    event.respondWith(caches.match(req).then((hit) => hit || fetch(req)));
  }
});
