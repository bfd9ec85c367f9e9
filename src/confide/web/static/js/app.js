/* Confide pages: composer (MS2, MS3, counter), confirmations (MS6), live updates over
   /api/v1/ws (NT5), local times. No inline script anywhere: the CSP forbids it.
   Everything a person wrote reaches the DOM either as server-rendered, escaped HTML
   or through textContent, never through innerHTML of our own making. */
(function () {
  "use strict";

  var body = document.body;
  var base = body.getAttribute("data-base") || "";
  var me = body.getAttribute("data-me") || "";

  function $(sel, root) { return (root || document).querySelector(sel); }
  function $all(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }
  function csrfHeaders() {
    try { return JSON.parse(body.getAttribute("hx-headers") || "{}"); } catch (e) { return {}; }
  }
  function announce(text) {
    var s = $("#live-status");
    if (s) { s.textContent = ""; window.setTimeout(function () { s.textContent = text; }, 50); }
  }

  /* ---- local times -------------------------------------------------------------- */
  function localTimes(root) {
    $all("time.local-time", root).forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (isNaN(d.getTime())) { return; }
      var now = new Date();
      var sameDay = d.toDateString() === now.toDateString();
      t.textContent = sameDay
        ? d.toLocaleTimeString([], { hour: "numeric", minute: "2-digit" })
        : d.toLocaleDateString([], { month: "short", day: "numeric" }) + ", " +
          d.toLocaleTimeString([], { hour: "numeric", minute: "2-digit" });
      t.title = d.toLocaleString();
    });
  }

  /* ---- character counters --------------------------------------------------------- */
  function codePoints(s) { return Array.from(s).length; }
  function updateCounter(textarea) {
    var id = textarea.getAttribute("data-counter") || "composer-count";
    var el = document.getElementById(id);
    if (!el) { return; }
    var max = parseInt(el.getAttribute("data-max"), 10);
    var n = codePoints(textarea.value);
    if (id === "composer-count") {
      // MS1: the count shows near the limit only.
      el.textContent = n >= max - 500 ? n + " / " + max : "";
    } else {
      el.textContent = n + " / " + max;
    }
    el.classList.toggle("over", n > max);
  }

  /* ---- emoji suggestions (MS2) ------------------------------------------------------ */
  var emojiTimer = null;
  var emojiActive = -1;
  function emojiList() { return $("#emoji-list"); }
  function closeEmoji(textarea) {
    var list = emojiList();
    if (!list) { return; }
    list.hidden = true;
    list.textContent = "";
    emojiActive = -1;
    if (textarea) {
      textarea.removeAttribute("aria-activedescendant");
    }
  }
  function currentCode(textarea) {
    var upto = textarea.value.slice(0, textarea.selectionStart);
    var m = /(^|\s|[^\w:]):([a-z0-9_+\-]{2,30})$/i.exec(upto);
    return m ? m[2] : null;
  }
  function chooseEmoji(textarea, option) {
    var code = option.getAttribute("data-code");
    var emoji = option.getAttribute("data-emoji");
    var pos = textarea.selectionStart;
    var before = textarea.value.slice(0, pos);
    var start = before.lastIndexOf(":");
    textarea.value = before.slice(0, start) + emoji + textarea.value.slice(pos);
    var caret = start + emoji.length;
    textarea.setSelectionRange(caret, caret);
    closeEmoji(textarea);
    updateCounter(textarea);
    textarea.focus();
    void code;
  }
  function highlight(textarea, index) {
    var options = $all("[role=option]", emojiList());
    if (!options.length) { return; }
    emojiActive = (index + options.length) % options.length;
    options.forEach(function (o, i) { o.setAttribute("aria-selected", i === emojiActive ? "true" : "false"); });
    textarea.setAttribute("aria-activedescendant", options[emojiActive].id);
  }
  function suggestEmoji(textarea) {
    var code = currentCode(textarea);
    if (!code) { closeEmoji(textarea); return; }
    window.clearTimeout(emojiTimer);
    emojiTimer = window.setTimeout(function () {
      // The prefix is part of the message being typed: in the body, never in the URL.
      fetch("/api/v1/emoji/search", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ prefix: ":" + code })
      })
        .then(function (r) { return r.ok ? r.json() : { suggestions: [] }; })
        .then(function (data) {
          var list = emojiList();
          if (!list || currentCode(textarea) !== code) { return; }
          list.textContent = "";
          (data.suggestions || []).forEach(function (s, i) {
            var li = document.createElement("li");
            li.id = "emoji-opt-" + i;
            li.setAttribute("role", "option");
            li.setAttribute("aria-selected", "false");
            li.setAttribute("data-code", s.code);
            li.setAttribute("data-emoji", s.emoji);
            li.textContent = s.emoji + "  " + s.code;
            li.addEventListener("mousedown", function (ev) { ev.preventDefault(); chooseEmoji(textarea, li); });
            list.appendChild(li);
          });
          var any = list.children.length > 0;
          list.hidden = !any;
          emojiActive = -1;
        })
        .catch(function () { closeEmoji(textarea); });
    }, 120);
  }

  /* ---- the composer (MS3: Enter sends, Shift+Enter adds a line) ---------------------- */
  function setupComposer(form) {
    var textarea = $("textarea", form);
    if (!textarea || textarea.getAttribute("data-ready")) { return; }
    textarea.setAttribute("data-ready", "1");
    textarea.addEventListener("input", function () { updateCounter(textarea); suggestEmoji(textarea); });
    textarea.addEventListener("keydown", function (ev) {
      var list = emojiList();
      var open = list && !list.hidden;
      if (open && (ev.key === "ArrowDown" || ev.key === "ArrowUp")) {
        ev.preventDefault();
        highlight(textarea, emojiActive + (ev.key === "ArrowDown" ? 1 : -1));
        return;
      }
      if (open && (ev.key === "Enter" || ev.key === "Tab") && emojiActive >= 0) {
        ev.preventDefault();
        chooseEmoji(textarea, $all("[role=option]", list)[emojiActive]);
        return;
      }
      if (open && ev.key === "Escape") { ev.preventDefault(); closeEmoji(textarea); return; }
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing && !ev.altKey && !ev.ctrlKey && !ev.metaKey) {
        ev.preventDefault();
        if (textarea.value.trim() === "") { return; }
        closeEmoji(textarea);
        form.requestSubmit();
      }
    });
    textarea.addEventListener("blur", function () { window.setTimeout(function () { closeEmoji(textarea); }, 150); });
    updateCounter(textarea);
  }

  function showError(form, text) {
    var el = $("#composer-error", form) || $("#composer-error");
    if (el) { el.textContent = text; el.hidden = false; }
  }
  function clearError(form) {
    var el = $("#composer-error", form) || $("#composer-error");
    if (el) { el.textContent = ""; el.hidden = true; }
  }

  /* ---- confirmations (MS6) through our own <dialog> ----------------------------------- */
  document.addEventListener("htmx:confirm", function (ev) {
    var question = ev.detail.question;
    if (!question) { return; }
    ev.preventDefault();
    var dialog = $("#confirm-dialog");
    var opener = document.activeElement;
    $("#confirm-text", dialog).textContent = question;
    dialog.returnValue = "";
    dialog.addEventListener("close", function onClose() {
      dialog.removeEventListener("close", onClose);
      if (dialog.returnValue === "ok") { ev.detail.issueRequest(true); }
      else if (opener && opener.focus) { opener.focus(); }
    });
    dialog.showModal();
    $("#confirm-ok", dialog).focus();
  });

  /* ---- htmx answers -------------------------------------------------------------------- */
  document.addEventListener("htmx:beforeRequest", function (ev) {
    var form = ev.detail.elt.closest && ev.detail.elt.closest("form[data-composer]");
    if (form) { clearError(form); }
  });
  document.addEventListener("htmx:responseError", function (ev) {
    var xhr = ev.detail.xhr;
    var text = (xhr.getResponseHeader("content-type") || "").indexOf("text/plain") === 0 && xhr.responseText
      ? xhr.responseText : "That did not work. Please try again.";
    var form = ev.detail.elt.closest && ev.detail.elt.closest("form");
    if (form && $("#composer-error", form)) { showError(form, text); }
    else { showBanner(text); }
  });
  document.addEventListener("htmx:sendError", function (ev) {
    var form = ev.detail.elt.closest && ev.detail.elt.closest("form");
    if (form) { showError(form, "You seem to be offline. Your message was not sent yet."); }
  });
  document.addEventListener("htmx:afterRequest", function (ev) {
    var form = ev.detail.elt;
    if (!ev.detail.successful || !form.matches || !form.matches("form[data-composer]")) { return; }
    var textarea = $("textarea", form);
    if (textarea) { textarea.value = ""; updateCounter(textarea); textarea.focus(); }
    refreshThread();
  });
  function showBanner(text) {
    var main = $("#main");
    var p = $("#page-error") || document.createElement("p");
    p.id = "page-error";
    p.className = "alert";
    p.setAttribute("role", "alert");
    p.textContent = text;
    if (!p.parentNode) { main.insertBefore(p, main.firstChild); }
  }

  /* ---- live updates (NT5) ------------------------------------------------------------- */
  function threadId() {
    var t = $("[data-thread]");
    return t ? t.getAttribute("data-thread") : null;
  }
  function lastSeq() {
    var seqs = $all("#messages > li[data-seq]").map(function (li) { return parseInt(li.getAttribute("data-seq"), 10); });
    return seqs.length ? Math.max.apply(null, seqs) : 0;
  }
  function fetchHtml(url) {
    return fetch(url, { credentials: "same-origin", headers: { "HX-Request": "true" } })
      .then(function (r) {
        if (r.status === 401) { window.location.assign("/signin"); throw new Error("signed out"); }
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.text();
      });
  }
  function parse(html) {
    var tpl = document.createElement("template");
    tpl.innerHTML = html; // server-rendered, autoescaped; htmx config forbids script tags
    return tpl.content;
  }
  // A part of the page rebuilt from the server gives focus back to the link that had it
  // (the same href), so a keyboard user keeps their place instead of landing on <body>.
  function focusedHref(root) {
    var f = document.activeElement;
    return f && root.contains(f) ? f.getAttribute("href") : null;
  }
  function refocus(root, href) {
    if (!href) { return; }
    var same = $all("a[href]", root).filter(function (a) { return a.getAttribute("href") === href; })[0];
    if (same) { same.focus({ preventScroll: true }); }
  }
  var refreshing = false, again = false;
  function refreshThread() {
    var id = threadId();
    if (!id || !base) { return; }
    if (refreshing) { again = true; return; }
    refreshing = true;
    // A hidden tab shows the messages but does not read them (MS7): the bubble stays
    // until the person looks; coming back reads them.
    fetchHtml(base + "/" + id + "/since?after=" + lastSeq() + (document.hidden ? "&read=false" : ""))
      .then(function (html) {
        var list = $("#messages");
        var frag = parse(html);
        var added = 0;
        $all("li[id]", frag).forEach(function (li) {
          var old = document.getElementById(li.id);
          if (old) { return; }
          list.appendChild(li);
          if (window.htmx) { window.htmx.process(li); }
          localTimes(li);
          added += 1;
        });
        if (added) { list.lastElementChild.scrollIntoView({ block: "end" }); }
      })
      .catch(function () {})
      .then(function () {
        refreshing = false;
        if (again) { again = false; refreshThread(); }
      });
  }
  function refreshList() {
    var box = $("#conv-list");
    if (!box || !base) { return; }
    fetchHtml(base + "/list?current=" + (box.getAttribute("data-current") || "0"))
      .then(function (html) {
        // A refresh comes with every new message, unread change and the socket's first
        // frame, often while someone is tabbing through the list.
        var href = focusedHref(box);
        box.textContent = "";
        box.appendChild(parse(html));
        localTimes(box);
        refocus(box, href);
      })
      .catch(function () {});
  }
  function refreshHead() {
    var id = threadId();
    var head = $("#thread-head");
    if (!id || !head) { return; }
    fetchHtml(base + "/" + id + "/head").then(function (html) {
      var fresh = parse(html).firstElementChild;
      if (fresh) { var href = focusedHref(head); head.replaceWith(fresh); refocus(fresh, href); }
    }).catch(function () {});
  }
  function setUnread(n) {
    var bubble = $("#unread-bubble");
    if (!bubble) { return; }
    $("#unread-count").textContent = n > 999 ? "999+" : String(n);
    bubble.hidden = !n;
  }
  function markRemoved(messageId) {
    var li = document.getElementById("m-" + messageId);
    if (!li || li.classList.contains("removed")) { return; }
    li.classList.add("removed");
    var bodyEl = $(".msg-body", li);
    if (bodyEl) { bodyEl.textContent = "This message was removed"; bodyEl.className = "msg-body removed-text"; bodyEl.removeAttribute("dir"); }
    var trash = $(".trash", li);
    if (trash) { trash.remove(); }
  }

  var cursor = null, socket = null, backoff = 500;
  function connect() {
    if (!me || !("WebSocket" in window)) { return; }
    var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/v1/ws";
    socket = new WebSocket(url);
    socket.addEventListener("open", function () {
      backoff = 500;
      socket.send(JSON.stringify({ type: "resume", cursor: cursor }));
    });
    socket.addEventListener("message", function (ev) {
      var f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      if (typeof f.position === "number" && (cursor === null || f.position > cursor)) { cursor = f.position; }
      var open = threadId();
      switch (f.type) {
        case "ready":
          setUnread(f.unread || 0);
          refreshThread(); refreshList(); // catch up with what happened before the socket opened
          break;
        case "resync":
          refreshThread(); refreshList();
          break;
        case "message.created":
          if (open && String(f.conversation_id) === open) { refreshThread(); }
          refreshList();
          break;
        case "message.removed":
          markRemoved(f.message_id);
          break;
        case "unread":
          setUnread(f.unread || 0);
          refreshList();
          break;
        case "away.changed":
          if ("member:" + f.member_id === me) {
            var flag = $("#nav-away");
            if (flag) { flag.hidden = !f.away; }
          }
          refreshHead();
          break;
        default:
          break;
      }
    });
    socket.addEventListener("close", function (ev) {
      socket = null;
      if (ev.code === 4401) { window.location.assign("/signin"); return; }
      if (ev.code === 4403) { return; }
      window.setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 15000);
    });
  }

  /* ---- copy buttons (the export password, EX3) ----------------------------------- */
  /* <button data-copy="ID">: copies the value (or text) of element ID to the clipboard.
     Falls back to selecting the text and execCommand where the Clipboard API is
     missing (an insecure context); says what happened in the live region. */
  document.addEventListener("click", function (ev) {
    var button = ev.target && ev.target.closest ? ev.target.closest("[data-copy]") : null;
    if (!button) { return; }
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) { return; }
    var text = source.value !== undefined ? source.value : source.textContent;
    var label = button.textContent;
    function done(ok) {
      button.textContent = ok ? "Copied" : label;
      announce(ok ? "Copied to the clipboard." : "Select the text and copy it yourself.");
      if (ok) { window.setTimeout(function () { button.textContent = label; }, 2500); }
    }
    function fallback() {
      var ok = false;
      if (source.select) { source.focus(); source.select(); }
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      done(ok);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done(true); }, fallback);
    } else {
      fallback();
    }
  });

  /* ---- start ------------------------------------------------------------------------ */
  function init(root) {
    localTimes(root);
    $all("form[data-composer]", root).forEach(setupComposer);
    $all("textarea[data-counter]", root).forEach(function (t) {
      t.addEventListener("input", function () { updateCounter(t); });
    });
  }
  init(document);
  var seenWhileHidden = false;
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) { seenWhileHidden = true; return; }
    if (seenWhileHidden && threadId()) {
      seenWhileHidden = false;
      var id = threadId();
      fetch(base + "/" + id + "/since?after=" + Math.max(lastSeq() - 1, 0), {
        credentials: "same-origin", headers: { "HX-Request": "true" }
      }).then(function () { refreshList(); }).catch(function () {});
    }
  });
  document.addEventListener("htmx:load", function (ev) { init(ev.detail.elt); });
  var list = $("#messages");
  if (list && list.lastElementChild) { list.lastElementChild.scrollIntoView({ block: "end" }); }
  if ("serviceWorker" in navigator && me) {
    navigator.serviceWorker.register("/sw.js").catch(function () {});
  }
  connect();
  void csrfHeaders;
})();
