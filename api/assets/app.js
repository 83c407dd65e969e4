// opsqueue's dashboard: confirmations and live updates from the event
// stream. Compiled into opsqueue-api (include_str!); no library, nothing
// from another origin. Every page works without it (forms post, links
// load); with it, pages follow GET /api/v1/events from the event id they
// were rendered at, so nothing that happened in between is missed.
"use strict";

(function () {
  const body = document.body;

  // --- Confirmations: <form data-confirm="…"> asks before it submits.
  document.addEventListener("submit", function (event) {
    const message = event.target.dataset.confirm;
    if (message && !window.confirm(message)) {
      event.preventDefault();
    }
  });

  // --- Times: <time datetime> in the reader's own zone.
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (node) {
      const at = new Date(node.getAttribute("datetime"));
      if (!isNaN(at)) {
        node.textContent = at.toLocaleString();
        node.title = node.getAttribute("datetime");
      }
    });
  }
  localTimes(document);

  function fragment(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        return response.status === 200 ? response.text() : null;
      })
      .then(function (html) {
        if (html === null) {
          return null;
        }
        const template = document.createElement("template");
        template.innerHTML = html.trim();
        localTimes(template.content);
        return template.content;
      });
  }

  function debounce(wait, action) {
    let timer = null;
    return function () {
      if (timer === null) {
        timer = window.setTimeout(function () {
          timer = null;
          action();
        }, wait);
      }
    };
  }

  // --- The event stream.
  const live = document.getElementById("live");
  function setLive(state, text) {
    if (live) {
      live.dataset.state = state;
      live.title = text;
    }
  }
  const handlers = [];
  if (body.dataset.events) {
    const source = new EventSource(body.dataset.events);
    source.onopen = function () { setLive("on", "live: following the event stream"); };
    source.onerror = function () { setLive("off", "not live: reconnecting to the event stream"); };
    ["operation.created", "operation.updated", "operation.finished",
     "workflow.created", "workflow.updated", "workflow.finished",
     "schedule.fired", "target.status_changed",
     "migration.created", "migration.updated", "migration.finished", "gap"].forEach(function (type) {
      source.addEventListener(type, function (message) {
        const event = JSON.parse(message.data);
        handlers.forEach(function (handle) { handle(type, event); });
      });
    });
  }

  // --- Operations list: new rows appear, states change in place.
  const table = document.getElementById("operations");
  if (table) {
    const filter = table.dataset;
    const rows = table.tBodies[0];
    let inserted = 0;
    window.setInterval(function () { inserted = 0; }, 1000);
    const matches = function (event) {
      const data = event.data;
      return filter.first === "true"
        && (!filter.status || filter.status === data.status)
        && (!filter.type || filter.type === data.type)
        && (!filter.source || filter.source === data.source)
        && (!filter.target || filter.target === event.target)
        && (!filter.resource || filter.resource === data.resource);
    };
    handlers.push(function (type, event) {
      if (type === "operation.created" && matches(event)) {
        // A burst is announced, not poured into the table.
        if (++inserted > 20) {
          document.getElementById("more").hidden = false;
          return;
        }
        fragment("/ui/operations/" + event.operation_id + "/row").then(function (row) {
          if (!row || document.getElementById("op-" + event.operation_id)) {
            return;
          }
          const empty = rows.querySelector("td.empty");
          if (empty) {
            empty.parentElement.remove();
          }
          // Keep what the reader looks at in place when they scrolled.
          const before = document.documentElement.scrollHeight;
          rows.insertBefore(row, rows.firstChild);
          if (window.scrollY > table.offsetTop) {
            window.scrollBy(0, document.documentElement.scrollHeight - before);
          }
        });
      } else if (type.indexOf("operation.") === 0) {
        const row = document.getElementById("op-" + event.operation_id);
        if (row) {
          update(row, event.data);
        }
      }
    });
  }

  function update(row, data) {
    if (data.status) {
      row.dataset.status = data.status;
      const badge = row.querySelector(".badge");
      badge.textContent = data.status;
      badge.className = "badge " + data.status;
    }
    const attempt = row.querySelector("[data-attempt]");
    if (attempt && data.attempt !== undefined) {
      attempt.textContent = data.attempt + "/" + attempt.dataset.max;
    }
    const progress = row.querySelector("[data-progress]");
    if (progress && data.progress && data.progress.percent !== undefined) {
      progress.innerHTML = "";
      const bar = document.createElement("progress");
      bar.max = 100;
      bar.value = data.progress.percent;
      progress.appendChild(bar);
    }
  }

  // --- A workflow: each step's card (and the workflow's own badge) changes
  // state in place; a compensation that starts brings the page again.
  const workflow = document.getElementById("workflow");
  if (workflow) {
    const again = debounce(300, function () { window.location.reload(); });
    handlers.push(function (type, event) {
      const card = document.getElementById("op-" + event.operation_id);
      if (card) {
        update(card, event.data);
        // The workflow itself ended: so did its phase.
        if (event.operation_id === workflow.dataset.id
            && ["completed", "failed", "cancelled"].indexOf(event.data.status) >= 0) {
          document.getElementById("phase").textContent = "ended";
        }
      } else if (type === "operation.created" && event.parent_id === workflow.dataset.id) {
        again();
      }
    });
  }

  // --- One operation: its summary is fetched again on each of its events.
  const summary = document.getElementById("summary");
  if (summary) {
    const refresh = debounce(150, function () {
      fragment(summary.dataset.src).then(function (content) {
        if (content) {
          summary.replaceChildren(content);
        }
      });
    });
    handlers.push(function (type, event) {
      if (event.operation_id === summary.dataset.id || event.parent_id === summary.dataset.id) {
        refresh();
      }
    });
  }

  // --- A log that follows: GET …/logs?follow=true until `end`.
  const log = document.getElementById("log");
  if (log && log.dataset.follow) {
    let attempt = Number(log.dataset.attempt || 0);
    const follow = new EventSource(log.dataset.follow);
    follow.addEventListener("line", function (message) {
      const line = JSON.parse(message.data);
      const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      const empty = log.querySelector(".none");
      if (empty) {
        empty.remove();
      }
      if (line.attempt !== attempt) {
        attempt = line.attempt;
        const mark = document.createElement("span");
        mark.className = "attempt";
        mark.textContent = "— attempt " + attempt + " —";
        log.appendChild(mark);
      }
      const node = document.createElement("span");
      node.className = "line " + line.stream;
      const at = document.createElement("span");
      at.className = "at";
      at.textContent = new Date(line.at).toLocaleTimeString();
      node.appendChild(at);
      node.appendChild(document.createTextNode(line.line));
      log.appendChild(node);
      if (stick) {
        log.scrollTop = log.scrollHeight;
      }
    });
    follow.addEventListener("end", function () {
      follow.close();
      log.dataset.ended = "true";
    });
  }

  // --- Migrations: the rows are fetched again when a migration moves.
  const migrations = document.getElementById("migrations");
  if (migrations) {
    const refresh = debounce(300, function () {
      fragment(migrations.dataset.src).then(function (content) {
        if (content) {
          migrations.tBodies[0].replaceChildren(content);
        }
      });
    });
    handlers.push(function (type) {
      if (type.indexOf("migration.") === 0 || type === "gap") {
        refresh();
      }
    });
  }

  // --- Overview: the figures are fetched again when operations move.
  const stats = document.getElementById("stats");
  if (stats) {
    const refresh = debounce(2000, function () {
      fragment(stats.dataset.src).then(function (content) {
        if (content) {
          stats.replaceChildren(content);
        }
      });
    });
    handlers.push(function (type) {
      if (type.indexOf("operation.") === 0) {
        refresh();
      }
    });
  }

  // --- The fire form: the chosen type's hint.
  const kind = document.getElementById("type");
  const hint = document.getElementById("type-hint");
  if (kind && hint) {
    kind.addEventListener("change", function () {
      const option = kind.options[kind.selectedIndex];
      hint.textContent = option ? option.dataset.summary || "" : "";
    });
  }
})();
