// Enroll staff pages: the Patient Portal menu (right-click, Shift+F10 or the
// context-menu key on a search row; click or Enter on the chart's banner
// icon), arrow keys between result rows, and Enroll Now answered in place.
// Our own small script: no framework, no build step, nothing from the internet.
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  var csrf = function () { return document.body.getAttribute("data-csrf") || ""; };
  var menu, answer, current = null, opener = null;

  function openMenu(target, x, y) {
    current = target;
    opener = target;
    var invited = target.getAttribute("data-invited") === "true";
    menu.querySelector('[data-action="resend"]').hidden = !invited;
    menu.hidden = false;
    var maxX = window.scrollX + document.documentElement.clientWidth - menu.offsetWidth - 8;
    menu.style.left = Math.min(x, maxX) + "px";
    menu.style.top = y + "px";
    if (target.id === "portal-icon") target.setAttribute("aria-expanded", "true");
    menu.querySelector("button:not([hidden])").focus();
  }

  function closeMenu(returnFocus) {
    if (!menu || menu.hidden) return;
    menu.hidden = true;
    var icon = document.getElementById("portal-icon");
    if (icon) icon.setAttribute("aria-expanded", "false");
    if (returnFocus && opener) opener.focus();
  }

  function openFor(el) {
    var r = el.getBoundingClientRect();
    openMenu(el, r.left + window.scrollX + 16, r.bottom + window.scrollY);
  }

  function show(html, refused) {
    answer.innerHTML = html;
    answer.className = "answer" + (refused ? " refused" : "");
    answer.hidden = false;
    var focusable = answer.querySelector("button, a");
    if (focusable) focusable.focus();
  }

  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  function setBadge(id, badge, cls) {
    document.querySelectorAll('[data-patient="' + id + '"]').forEach(function (row) {
      row.setAttribute("data-invited", cls === "not-invited" ? "false" : "true");
      var b = row.querySelector("[data-badge]");
      if (b) b.textContent = badge;
      var holder = row.classList.contains("portal-icon") ? row : b;
      if (holder) holder.className = holder.className.replace(/badge-[a-z-]+/, "badge-" + cls);
    });
  }

  // After a send, ask until the dispatcher has handed the invite over.
  function watch(id, tries) {
    if (tries <= 0) return;
    setTimeout(function () {
      fetch("/patients/" + id + "/status", { headers: { Accept: "application/json" } })
        .then(function (r) { return r.json(); })
        .then(function (s) {
          setBadge(id, s.badge, s.badge_class);
          if (s.badge_class !== "invited") watch(id, tries - 1);
        })
        .catch(function () {});
    }, 1000);
  }

  function enroll(id, action) {
    var body = new URLSearchParams();
    body.set("csrf", csrf());
    if (action) body.set("action", action);
    fetch("/patients/" + id + "/enroll", {
      method: "POST",
      headers: { Accept: "application/json", "X-CSRF-Token": csrf() },
      body: body
    }).then(function (r) {
      if (r.status === 401) { location.href = "/signin?next=" + encodeURIComponent(location.pathname + location.search); return null; }
      return r.json();
    }).then(function (a) {
      if (!a) return;
      setBadge(id, a.badge, a.badge_class);
      if (a.result === "sent") {
        show("<p><strong>Sent.</strong> " + esc(a.message) + "</p><div class='actions'><button type='button' data-close>OK</button></div>", false);
        watch(id, 10);
        return;
      }
      var html = "<p><strong>" + esc(a.message) + "</strong></p>";
      if (a.missing && a.missing.length) {
        html += "<ul>" + a.missing.map(function (m) { return "<li>" + esc(m.message) + "</li>"; }).join("") + "</ul>";
        html += "<div class='actions'><button type='button' class='primary' data-update='" + esc(a.missing[0].field) + "' data-id='" + id + "'>Update now</button><button type='button' data-close>Close</button></div>";
      } else {
        html += "<div class='actions'><button type='button' data-close>OK</button></div>";
      }
      show(html, true);
    }).catch(function () {
      show("<p><strong>Not sent:</strong> the server could not be reached. Try again.</p><div class='actions'><button type='button' data-close>OK</button></div>", true);
    });
  }

  function updateNow(id, field) {
    var form = document.getElementById("demographics-form");
    // No #fragment: a page opened at a fragment skips autofocus.
    if (!form) { location.href = "/patients/" + id + "?update=" + encodeURIComponent(field); return; }
    document.getElementById("then").value = "enroll";
    document.getElementById("save").textContent = "Save and send invitation";
    var input = document.getElementById("field-" + field);
    answer.hidden = true;
    if (input) { input.closest(".field").classList.add("highlight"); input.focus(); }
  }

  // Enroll in person: a plain form post, so the answer is a page (the QR
  // code and short code to show), or the chart with the refusal.
  function inPerson(id) {
    var form = document.createElement("form");
    form.method = "post";
    form.action = "/patients/" + id + "/in-person";
    var field = document.createElement("input");
    field.type = "hidden";
    field.name = "csrf";
    field.value = csrf();
    form.appendChild(field);
    document.body.appendChild(form);
    form.submit();
  }

  function act(action) {
    var target = current;
    closeMenu(false);
    if (!target) return;
    var id = target.getAttribute("data-patient");
    if (action === "history") { location.href = "/patients/" + id + "#invites"; return; }
    if (action === "in-person") { inPerson(id); return; }
    enroll(id, action === "resend" ? "resend" : null);
  }

  // "Invite existing patients" and "Load a roster": while a run is
  // running, its numbers are asked for every few seconds (the section's
  // data-progress names where) and written into the page; a run that
  // ends reloads the page once for its summary.
  function watchProgress(section) {
    var url = section.getAttribute("data-progress");
    setTimeout(function () {
      fetch(url, { headers: { Accept: "application/json" } })
        .then(function (r) { return r.json(); })
        .then(function (a) {
          if (!a.run || !a.run.running) { location.href = location.pathname; return; }
          section.querySelectorAll("[data-field]").forEach(function (el) {
            var v = a.run[el.getAttribute("data-field")];
            if (v !== undefined && v !== null) el.textContent = v;
          });
          var bar = section.querySelector("progress");
          if (bar) { bar.value = a.run.percent; bar.textContent = a.run.percent + "%"; }
          watchProgress(section);
        })
        .catch(function () { watchProgress(section); });
    }, section.hasAttribute("data-quick") ? 1000 : 3000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-progress][data-running]").forEach(watchProgress);
    document.querySelectorAll("[data-print]").forEach(function (b) {
      b.hidden = false;
      b.addEventListener("click", function () { window.print(); });
    });
    var wanted = new URLSearchParams(location.search).get("update");
    var field = wanted && document.getElementById("field-" + wanted);
    if (field) { field.closest(".field").classList.add("highlight"); field.focus(); }
    menu = document.getElementById("portal-menu");
    answer = document.getElementById("answer");
    if (!menu) return;
    var rows = Array.prototype.slice.call(document.querySelectorAll(".results tbody tr"));

    rows.forEach(function (row, i) {
      row.addEventListener("contextmenu", function (e) { e.preventDefault(); row.focus(); openMenu(row, e.pageX, e.pageY); });
      row.addEventListener("dblclick", function () { location.href = row.getAttribute("data-href"); });
      row.addEventListener("keydown", function (e) {
        if (e.key === "ContextMenu" || (e.shiftKey && e.key === "F10")) { e.preventDefault(); openFor(row); }
        else if (e.key === "Enter") { location.href = row.getAttribute("data-href"); }
        else if (e.key === "ArrowDown" && rows[i + 1]) { e.preventDefault(); rows[i + 1].focus(); }
        else if (e.key === "ArrowUp" && rows[i - 1]) { e.preventDefault(); rows[i - 1].focus(); }
      });
      row.addEventListener("click", function (e) { if (e.target.tagName !== "A") row.focus(); });
    });
    var q = document.getElementById("q");
    if (q && rows.length) q.addEventListener("keydown", function (e) { if (e.key === "ArrowDown") { e.preventDefault(); rows[0].focus(); } });

    var icon = document.getElementById("portal-icon");
    if (icon) icon.addEventListener("click", function () { if (menu.hidden) openFor(icon); else closeMenu(true); });

    menu.addEventListener("click", function (e) {
      var b = e.target.closest("button[data-action]");
      if (b) act(b.getAttribute("data-action"));
    });
    menu.addEventListener("keydown", function (e) {
      var items = Array.prototype.slice.call(menu.querySelectorAll("button:not([hidden])"));
      var at = items.indexOf(document.activeElement);
      if (e.key === "Escape") { e.preventDefault(); closeMenu(true); }
      else if (e.key === "ArrowDown") { e.preventDefault(); items[(at + 1) % items.length].focus(); }
      else if (e.key === "ArrowUp") { e.preventDefault(); items[(at - 1 + items.length) % items.length].focus(); }
      else if (e.key === "Tab") { closeMenu(true); }
    });
    document.addEventListener("click", function (e) { if (!menu.hidden && !menu.contains(e.target) && e.target !== icon && !(icon && icon.contains(e.target))) closeMenu(false); });

    answer.addEventListener("click", function (e) {
      if (e.target.hasAttribute("data-close")) { answer.hidden = true; if (opener) opener.focus(); }
      var u = e.target.getAttribute("data-update");
      if (u) updateNow(e.target.getAttribute("data-id"), u);
    });
    answer.addEventListener("keydown", function (e) { if (e.key === "Escape") { answer.hidden = true; if (opener) opener.focus(); } });

    // Confirmed, answered in place.
    var confirm = document.getElementById("confirm-form");
    if (confirm) confirm.addEventListener("submit", function (e) {
      e.preventDefault();
      fetch(confirm.action, { method: "POST", headers: { Accept: "application/json" }, body: new URLSearchParams(new FormData(confirm)) })
        .then(function (r) { return r.json(); })
        .then(function (c) { document.getElementById("confirmed-line").textContent = "Fields confirmed " + c.confirmed_at + " by " + c.confirmed_by; })
        .catch(function () { confirm.submit(); });
    });
  });
})();
