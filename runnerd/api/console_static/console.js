// runnerd web console: polls /console/api/state every 2 s and redraws. No framework, no
// innerHTML: every value from the daemon goes in as text (textContent), never as markup.
"use strict";

const STATE_URL = "/console/api/state";
const POLL_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function duration(s) {
  if (s == null) return "–";
  if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
  if (s < 3600) return Math.floor(s / 60) + " m " + Math.round(s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " m";
}

function clock(t) {
  return t == null ? "–" : new Date(t * 1000).toLocaleTimeString([], {hour12: false});
}

function statusClass(code) {
  if (code === 70) return "ok";
  if (code === 7) return "stopped";
  if (code > 70 || code === 31 || code === 32) return "bad";
  if (code === 1) return "queued";
  return "running";
}

function phaseClass(code) {
  // the timeline tells the phases apart: preparing (10-30), running (40), publishing (50-60)
  if (code >= 10 && code <= 30) return "prep";
  if (code === 50 || code === 60) return "publish";
  return statusClass(code);
}

function badge(job) {
  return el("span", {class: "status " + statusClass(job.status), title: job.statusText},
            el("b", {}, String(job.status)), " " + job.statusText);
}

function bar(used, total) {
  const pct = total > 0 ? Math.min(100, Math.round(100 * used / total)) : 0;
  const fill = el("span", {class: "fill"});
  fill.style.width = pct + "%";
  return el("span", {class: "bar"}, fill);
}

function environments(envs) {
  const box = document.getElementById("environments");
  box.replaceChildren(...envs.map((e) => el("div", {class: "card", "data-env": e.id},
    el("h3", {}, e.id, e.description ? el("span", {class: "muted"}, " " + e.description) : ""),
    el("dl", {},
      el("dt", {}, "Slots"), el("dd", {class: "slots"}, bar(e.running, e.maxJobs), `${e.running}/${e.maxJobs} running`),
      el("dt", {}, "Queue"), el("dd", {class: "queue"}, bar(e.queued, e.maxQueue), `${e.queued}/${e.maxQueue} waiting`),
      el("dt", {}, "Cores"), el("dd", {}, bar(e.coresInUse, e.cores), `${e.coresInUse} of ${e.cores} in use`),
      el("dt", {}, "GPUs"), el("dd", {}, e.gpus.length ? `${e.gpusInUse.length} of ${e.gpus.length} in use` +
        (e.gpusInUse.length ? " (" + e.gpusInUse.join(", ") + ")" : "") : "none")))));
}

function timeline(job, now) {
  // one segment per status, as wide as the time spent in it
  const h = job.statusHistory;
  const start = h.length ? h[0].date : job.dateCreated;
  const end = job.dateFinished || now;
  const span = Math.max(end - start, 0.001);
  const box = svg("svg", {class: "timeline", viewBox: "0 0 100 10", preserveAspectRatio: "none"});
  h.forEach((s, i) => {
    const until = i + 1 < h.length ? h[i + 1].date : end;
    let x = 100 * (s.date - start) / span;
    let w = Math.max(100 * (until - s.date) / span, 0.4);
    if (i + 1 === h.length && job.terminal) { x = Math.min(x, 97.5); w = 100 - x; }  // the end, visible
    const r = svg("rect", {x: x.toFixed(2), y: 0, width: w.toFixed(2), height: 10, class: phaseClass(s.status)});
    const tip = svg("title");
    tip.textContent = `${s.status} ${s.statusText} at ${clock(s.date)} (${duration(until - s.date)})`;
    r.append(tip);
    box.append(r);
  });
  return box;
}

function jobs(list, now) {
  const body = document.querySelector("#jobs tbody");
  document.getElementById("jobs-count").textContent = list.length ? `(${list.length})` : "";
  if (!list.length) { body.replaceChildren(el("tr", {}, el("td", {colspan: 8, class: "empty"}, "no jobs yet"))); return; }
  body.replaceChildren(...list.map((j) => el("tr", {"data-job-id": j.jobId, class: j.terminal ? "done" : "live"},
    el("td", {class: "mono", title: j.jobId}, j.jobId.slice(0, 8)),
    el("td", {class: "mono owner"}, j.owner),
    el("td", {class: "env"}, j.environment),
    el("td", {}, badge(j)),
    el("td", {}, clock(j.dateCreated)),
    el("td", {class: "num"}, duration(j.queuedSeconds)),
    el("td", {class: "num"}, duration(j.runSeconds)),
    el("td", {class: "timeline-cell"}, timeline(j, now)))));
}

function failures(list) {
  const body = document.querySelector("#failures tbody");
  if (!list.length) { body.replaceChildren(el("tr", {}, el("td", {colspan: 6, class: "empty"}, "no failures"))); return; }
  body.replaceChildren(...list.map((j) => el("tr", {"data-job-id": j.jobId},
    el("td", {}, clock(j.dateFinished)),
    el("td", {class: "mono", title: j.jobId}, j.jobId.slice(0, 8)),
    el("td", {class: "mono"}, j.owner),
    el("td", {}, j.environment),
    el("td", {}, badge(j)),
    el("td", {class: "reason"}, j.error || "–"))));
}

function chart(id, series, classes, minutesAgo) {
  const W = 600, H = 120, PAD = 18, n = series[0].length;
  const totals = series[0].map((_, i) => series.reduce((a, s) => a + s[i], 0));
  const max = Math.max(1, ...totals);
  const bw = (W - PAD) / n;
  const box = svg("svg", {viewBox: `0 0 ${W} ${H}`, class: "bars", role: "img"});
  for (const frac of [0, 0.5, 1]) {
    const y = H - PAD - frac * (H - 2 * PAD);
    box.append(svg("line", {x1: PAD, x2: W, y1: y, y2: y, class: "grid"}));
    const label = svg("text", {x: PAD - 4, y: y + 4, class: "axis", "text-anchor": "end"});
    label.textContent = String(Math.round(frac * max * 10) / 10);
    box.append(label);
  }
  for (let i = 0; i < n; i++) {
    let y = H - PAD;
    series.forEach((s, k) => {
      if (!s[i]) return;
      const h = s[i] / max * (H - 2 * PAD);
      y -= h;
      const r = svg("rect", {x: (PAD + i * bw + 0.5).toFixed(1), y: y.toFixed(1), width: Math.max(bw - 1, 1).toFixed(1),
                             height: h.toFixed(1), class: classes[k]});
      const tip = svg("title");
      tip.textContent = `${n - i - 1} min ago: ${s[i]}`;
      r.append(tip);
      box.append(r);
    });
  }
  for (const [x, text] of [[PAD, "-60 min"], [PAD + (W - PAD) / 2, "-30 min"], [W, "now"]]) {
    const t = svg("text", {x, y: H - 3, class: "axis", "text-anchor": x === W ? "end" : x === PAD ? "start" : "middle"});
    t.textContent = text;
    box.append(t);
  }
  document.getElementById(id).replaceChildren(box);
}

function render(s) {
  const n = s.node;
  document.getElementById("node").replaceChildren(
    el("span", {class: "mono", title: n.address}, n.address), " · v" + n.version + " · Docker ",
    el("span", {class: n.docker === "up" ? "ok-text" : "bad-text"}, n.docker));
  environments(s.environments);
  const c = s.charts;
  chart("chart-throughput", [c.completed, c.failed], ["ok", "bad"]);
  chart("chart-queue", [c.queue], ["queued"]);
  const done = c.completed.reduce((a, b) => a + b, 0), failed = c.failed.reduce((a, b) => a + b, 0);
  document.getElementById("finished-total").textContent = `${done + failed} in the hour (${failed} failed)`;
  document.getElementById("queue-now").textContent = `${c.queue[c.queue.length - 1]} now`;
  jobs(s.jobs, n.now);
  failures(s.failures);
  document.getElementById("truncated").hidden = !s.truncated;
  const up = document.getElementById("updated");
  up.textContent = "updated " + clock(n.now);
  up.className = "updated";
}

async function poll() {
  try {
    const r = await fetch(STATE_URL, {credentials: "same-origin", cache: "no-store"});
    if (!r.ok) {
      const body = await r.json().catch(() => ({}));
      throw new Error(body.error || `HTTP ${r.status}`);
    }
    render(await r.json());
  } catch (e) {
    const up = document.getElementById("updated");
    up.textContent = "not updating: " + e.message;
    up.className = "updated stale";
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
