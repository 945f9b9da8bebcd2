// podindex's web UI: plain modern JavaScript, no framework, no build step.
// It talks to podindex's public HTTP API only (the same routes the README documents).
// Views are chosen by the URL's fragment: #/pods, #/ip, #/pod/{cluster}/{ns}/{name},
// #/integrations. Every value from the API reaches the page as text (h() below), never HTML.

const TOKEN_KEY = "podindex.token";
const PROTOCOL = "podindex.v1";
const TOKEN_PROTOCOL = "base64url.bearer.authorization.podindex.io.";
const STATUSES = [
  "Running", "Pending", "ContainerCreating", "PodInitializing", "Completed", "Error",
  "CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "OOMKilled", "Terminating",
  "Init:0/1", "Unknown", "Evicted",
];

// --- small helpers ----------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const $ = (selector) => document.querySelector(selector);

function age(timestamp) {
  if (!timestamp) return "";
  const ms = typeof timestamp === "number" ? timestamp * 1000 : Date.parse(timestamp);
  if (Number.isNaN(ms)) return "";
  let s = Math.max(0, Math.floor((Date.now() - ms) / 1000));
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 120) return `${m}m`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours}h${m % 60 ? (m % 60) + "m" : ""}`;
  s = Math.floor(hours / 24);
  return `${s}d${hours % 24 ? (hours % 24) + "h" : ""}`;
}

function when(seconds) {
  if (seconds === null || seconds === undefined) return "now";
  return new Date(seconds * 1000).toISOString().replace(".000Z", "Z");
}

function statusClass(status) {
  if (!status) return "status";
  if (status === "Running" || status === "Completed" || status === "Connected") return "status ok";
  if (/Pending|Creating|Initializing|Init:|Terminating|Degraded/.test(status)) return "status warn";
  return "status bad";
}

function isIP(text) {
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(text)) return true;
  const bare = text.replace(/^\[|\]$/g, "").replace(/%.*$/, "");
  return bare.includes(":") && /^[0-9a-fA-F:.]+$/.test(bare) && bare.split(":").length >= 3;
}

function isSelector(text) {
  return /[=!]/.test(text) || /\s(in|notin)\s*\(/.test(text);
}

function b64url(text) {
  const bytes = new TextEncoder().encode(text);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function params(query) {
  const out = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== "" && v !== null && v !== undefined) out.set(k, v);
  return out.toString();
}

// --- the API ----------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.message || body.error)) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options = { ...options, body: JSON.stringify(options.json) };
  }
  const response = await fetch(path, { ...options, headers });
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = { message: text.slice(0, 200) }; }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

function socket(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const protocols = [PROTOCOL];
  if (token()) protocols.push(TOKEN_PROTOCOL + b64url(token()));
  return new WebSocket(`${scheme}//${location.host}${path}`, protocols);
}

// --- who is signed in ------------------------------------------------------------

const me = { name: "anonymous", role: "none", grants: [], lookups: "open" };

function may(role, namespace) {
  const rank = { none: 0, reader: 1, admin: 2 };
  if (role === "reader" && me.lookups === "open") return true;
  return me.grants.some((g) => rank[g.role] >= rank[role]
    && (g.namespaces === null || (namespace !== undefined && g.namespaces.includes(namespace))));
}

async function refreshWho() {
  try {
    Object.assign(me, await api("/api/whoami"));
  } catch (err) {
    if (err.status === 401 && token()) {
      sessionStorage.removeItem(TOKEN_KEY);
      banner("Your token is no longer accepted; signed out.");
      Object.assign(me, { name: "anonymous", role: "none", grants: [] });
    } else {
      banner(`Cannot reach podindex: ${err.message}`);
    }
  }
  $("#who").textContent = token() ? `${me.name} · ${me.role}` : "not signed in";
  $("#signin").hidden = Boolean(token());
  $("#signout").hidden = !token();
}

function banner(text) {
  const el = $("#banner");
  el.textContent = text || "";
  el.hidden = !text;
}

function setupSignIn() {
  const dialog = $("#signin-dialog");
  $("#signin").addEventListener("click", () => {
    $("#signin-error").textContent = "";
    $("#token-input").value = "";
    dialog.showModal();
  });
  $("#signin-cancel").addEventListener("click", () => dialog.close());
  $("#signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = $("#token-input").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    try {
      Object.assign(me, await api("/api/whoami"));
    } catch (err) {
      sessionStorage.removeItem(TOKEN_KEY);
      $("#signin-error").textContent = err.status === 401 ? "This token is not known." : err.message;
      return;
    }
    dialog.close();
    banner("");
    await refreshWho();
    route();
  });
  $("#signout").addEventListener("click", async () => {
    sessionStorage.removeItem(TOKEN_KEY);
    Object.assign(me, { name: "anonymous", role: "none", grants: [] });
    await refreshWho();
    route();
  });
}

// --- routing ----------------------------------------------------------------------

let cleanup = [];

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(query) };
}

function go(path, query) {
  const q = query ? params(query) : "";
  location.hash = `#/${path}${q ? "?" + q : ""}`;
}

function route() {
  for (const stop of cleanup) stop();
  cleanup = [];
  const { parts, query } = parseHash();
  const view = $("#view");
  view.replaceChildren();
  const name = parts[0] || "pods";
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === (name === "pod" ? "pods" : name));
  }
  if (name === "ip") ipView(view, query);
  else if (name === "pod" && parts.length === 4) podView(view, parts[1], parts[2], parts[3], query);
  else if (name === "integrations") integrationsView(view);
  else podsView(view, query);
}

// --- Pods -------------------------------------------------------------------------

async function clusterIds() {
  try {
    const response = await fetch("/ready");
    const body = await response.json();
    return Object.keys(body.clusters || {});
  } catch {
    return [];
  }
}

function podLink(cluster, namespace, name) {
  return `#/pod/${encodeURIComponent(cluster)}/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}`;
}

function podsView(view, query) {
  const state = {
    cluster: query.get("cluster") || "",
    namespace: query.get("namespace") || "",
    status: query.get("status") || "",
    node: query.get("node") || "",
    q: query.get("q") || "",
    page: Number(query.get("page") || 1),
    pageSize: Number(query.get("pageSize") || 20),
  };
  const cluster = h("select", { name: "cluster", "aria-label": "cluster" }, h("option", { value: "" }, "All clusters"));
  const namespace = h("input", { name: "namespace", placeholder: "namespace", value: state.namespace, "aria-label": "namespace" });
  const status = h("input", { name: "status", placeholder: "status", list: "statuses", value: state.status, "aria-label": "status" });
  const node = h("input", { name: "node", placeholder: "node", value: state.node, "aria-label": "node" });
  const search = h("input", {
    name: "q", type: "search", class: "search", value: state.q, "aria-label": "search",
    placeholder: "name fragment, IP (10.244.1.7, fd00::7) or label selector (app=web)",
  });
  const pageSize = h("select", { name: "pageSize", "aria-label": "page size" },
    [20, 50, 100, 500].map((n) => h("option", { value: n, selected: n === state.pageSize }, `${n} / page`)));
  const form = h("form", { class: "filters", role: "search" },
    cluster, namespace, status, node, search, pageSize,
    h("datalist", { id: "statuses" }, STATUSES.map((s) => h("option", { value: s }))),
    h("button", { type: "submit", class: "primary" }, "Search"));
  const result = h("section", { class: "results", "data-testid": "results" }, h("p", { class: "muted" }, "Loading…"));
  view.append(h("h1", {}, "Pods"), form, result);

  clusterIds().then((ids) => {
    for (const id of ids) cluster.append(h("option", { value: id, selected: id === state.cluster }, id));
  });

  const submit = (page) => {
    go("pods", {
      cluster: cluster.value, namespace: namespace.value.trim(), status: status.value.trim(),
      node: node.value.trim(), q: search.value.trim(), page: page > 1 ? page : "",
      pageSize: pageSize.value !== "20" ? pageSize.value : "",
    });
  };
  form.addEventListener("submit", (event) => { event.preventDefault(); submit(1); });
  for (const el of [cluster, pageSize]) el.addEventListener("change", () => submit(1));
  status.addEventListener("change", () => submit(1));

  if (state.q && isIP(state.q)) showIP(result, state.q);
  else loadPage(result, state, submit);
}

async function showIP(result, ip) {
  try {
    const answer = await api(`/pod?${params({ ip })}`);
    result.replaceChildren(...ipAnswer(answer), h("p", {}, h("a", { href: `#/ip?${params({ ip })}` }, "Lease history of this IP →")));
  } catch (err) {
    result.replaceChildren(...ipProblem(err, ip));
  }
}

function ipAnswer(answer) {
  if (answer.state === "node") {
    return [
      h("p", { class: "notice", "data-testid": "node-ip" },
        `${answer.ip} is node ${answer.node_name}'s own address (cluster ${answer.cluster}), shared by its host-network pods:`),
      h("ul", {}, answer.pods.map((p) => h("li", {}, h("a", { href: podLink(p.cluster, p.namespace, p.name) }, `${p.namespace}/${p.name}`)))),
    ];
  }
  return [podTable([answerRow(answer)], true)];
}

function answerRow(a) {
  return {
    cluster: a.cluster, name: a.name, namespace: a.namespace,
    status: a.state === "terminated" ? `Terminated (released ${a.released_at})` : a.phase,
    restarts: "", nodeName: a.node_name, podIP: (a.pod_ips || []).join(", ") || a.pod_ip,
    createdAt: a.creation_timestamp, identity: a.identity, workload: a.workload,
  };
}

function ipProblem(err, ip) {
  if (err.status === 409 && err.body && err.body.matches) {
    return [
      h("p", { class: "notice", "data-testid": "ambiguous" }, `${ip} is held in ${err.body.matches.length} clusters at once:`),
      podTable(err.body.matches.map(answerRow), true),
    ];
  }
  if (err.status === 404) return [h("p", { class: "notice", "data-testid": "no-holder" }, `No pod holds ${ip} now.`),
    h("p", {}, h("a", { href: `#/ip?${params({ ip })}` }, "Who held it before? Lease history →"))];
  return [h("p", { class: "error" }, err.message)];
}

async function loadPage(result, state, submit) {
  const search = state.q;
  const query = {
    namespace: state.namespace, status: state.status, nodeName: state.node,
    page: state.page, pageSize: state.pageSize,
  };
  if (search && isSelector(search)) query.labelSelector = search;
  else query.search = search;
  const path = state.cluster
    ? `/api/clusters/${encodeURIComponent(state.cluster)}/pods`
    : "/api/pods";
  let data;
  try {
    data = (await api(`${path}?${params(query)}`)).data;
  } catch (err) {
    const hint = err.status === 401 ? " Sign in to list pods." : "";
    result.replaceChildren(h("p", { class: "error" }, err.message + hint));
    return;
  }
  const pages = Math.max(1, Math.ceil(data.total / data.pageSize));
  const pager = h("div", { class: "pager" },
    h("button", { type: "button", disabled: state.page <= 1, onclick: () => submit(state.page - 1) }, "← Previous"),
    h("span", { "data-testid": "total" }, `page ${state.page} of ${pages} · ${data.total} pods`),
    h("button", { type: "button", disabled: state.page >= pages, onclick: () => submit(state.page + 1) }, "Next →"));
  const notes = (data.unsynced || []).length
    ? h("p", { class: "muted" }, `Not synced yet, not listed: ${data.unsynced.join(", ")}`) : null;
  result.replaceChildren(podTable(data.items, !state.cluster), pager, notes || "");
}

function podTable(items, showCluster) {
  const head = ["Name", "Namespace", "Status", "Restarts", "Node", "IP", "Age", "Workload"];
  if (showCluster) head.push("Cluster");
  const rows = items.map((p) => h("tr", { "data-testid": "pod-row" },
    h("td", {}, h("a", { href: podLink(p.cluster, p.namespace, p.name) }, p.name)),
    h("td", {}, p.namespace),
    h("td", {}, h("span", { class: statusClass(p.status) }, p.status)),
    h("td", { class: "num" }, p.restarts),
    h("td", {}, p.nodeName),
    h("td", { class: "mono" }, (p.podIPs && p.podIPs.length ? p.podIPs.join(", ") : p.podIP) || ""),
    h("td", { title: p.createdAt || "" }, age(p.createdAt)),
    h("td", {}, p.identity || "", p.workload ? h("span", { class: "muted" }, ` ${p.workload.kind}/${p.workload.name}`) : ""),
    showCluster ? h("td", {}, p.cluster) : null,
  ));
  if (!rows.length) return h("p", { class: "muted", "data-testid": "empty" }, "No pods match.");
  return h("table", { class: "pods" }, h("thead", {}, h("tr", {}, head.map((t) => h("th", {}, t)))), h("tbody", {}, rows));
}

// --- IP ---------------------------------------------------------------------------

function ipView(view, query) {
  const ip = query.get("ip") || "";
  const at = query.get("at") || "";
  const ipInput = h("input", { name: "ip", placeholder: "10.244.1.7 or fd00::7", value: ip, required: true, "aria-label": "IP" });
  const atInput = h("input", { name: "at", placeholder: "optional: time, e.g. 2026-11-30T14:03:00Z", value: at, "aria-label": "time" });
  const form = h("form", { class: "filters" }, ipInput, atInput, h("button", { type: "submit", class: "primary" }, "Look up"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    go("ip", { ip: ipInput.value.trim(), at: atInput.value.trim() });
  });
  const now = h("section", { "data-testid": "ip-answer" });
  const history = h("section", { "data-testid": "leases" });
  view.append(h("h1", {}, "IP lookup"),
    h("p", { class: "muted" }, "Who holds an address now, who held it at a time, and every lease of it in the retention period."),
    form, now, history);
  if (!ip) return;
  if (at) holderAt(now, ip, at); else showIP(now, ip);
  leaseHistory(history, ip, at);
}

async function holderAt(section, ip, at) {
  try {
    const row = await api(`/pod/ip/${encodeURIComponent(ip)}?${params({ at })}`);
    section.replaceChildren(
      h("h2", {}, `At ${at}`),
      h("p", { class: "notice", "data-testid": "held-at" },
        `${row.pod_namespace}/${row.pod_name} (cluster ${row.cluster}) ${row.state === "held" ? "held" : "had just released"} ${ip}: `
        + `from ${row.held_from} to ${row.held_to || "now"}.`),
      row.is_dead ? h("p", { class: "muted" }, "That pod is gone now.")
        : h("p", {}, h("a", { href: podLink(row.cluster, row.pod_namespace, row.pod_name) }, "Open the pod →")));
  } catch (err) {
    section.replaceChildren(h("p", { class: err.status === 404 ? "notice" : "error" },
      err.status === 404 ? `No pod held ${ip} at ${at}.` : err.message));
  }
}

async function leaseHistory(section, ip, at) {
  let body;
  try {
    body = await api(`/api/ips/${encodeURIComponent(ip)}/leases?limit=200`);
  } catch (err) {
    section.replaceChildren(h("p", { class: "error" }, err.message));
    return;
  }
  const instant = at ? Date.parse(at) / 1000 : null;
  const rows = body.leases.map((l) => h("tr", {
    "data-testid": "lease-row",
    class: instant !== null && l.held_from <= instant && (l.held_to === null || instant < l.held_to) ? "hit" : "",
  },
    h("td", {}, l.held_to === null ? h("a", { href: podLink(l.cluster, l.namespace, l.name) }, `${l.namespace}/${l.name}`) : `${l.namespace}/${l.name}`),
    h("td", {}, l.cluster), h("td", {}, l.node),
    h("td", {}, l.workload_identity, l.workload_kind ? h("span", { class: "muted" }, ` ${l.workload_kind}/${l.workload_name}`) : ""),
    h("td", { class: "mono" }, when(l.held_from)), h("td", { class: "mono" }, when(l.held_to))));
  section.replaceChildren(h("h2", {}, `Lease history of ${body.ip} (${body.total})`),
    rows.length
      ? h("table", {}, h("thead", {}, h("tr", {}, ["Pod", "Cluster", "Node", "Workload", "Held from", "Held to"].map((t) => h("th", {}, t)))), h("tbody", {}, rows))
      : h("p", { class: "muted" }, "No pod held this IP in the retention period."));
}

// --- one pod ----------------------------------------------------------------------

function podView(view, cluster, namespace, name, query) {
  const base = `/api/clusters/${encodeURIComponent(cluster)}/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}`;
  const wsBase = `/ws/clusters/${encodeURIComponent(cluster)}/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}`;
  const admin = may("admin", namespace);
  const tab = query.get("tab") || "details";
  const tabs = [["details", "Details"], ["events", "Events"], ["logs", "Logs"]];
  if (admin) tabs.push(["terminal", "Terminal"]);
  const deleteButton = admin
    ? h("button", { type: "button", class: "danger", "data-testid": "delete", onclick: () => deletePod(base, namespace, name, cluster) }, "Delete")
    : null;
  const body = h("section", { class: "tab-body" }, h("p", { class: "muted" }, "Loading…"));
  view.append(
    h("div", { class: "title-row" },
      h("h1", {}, h("span", { class: "muted" }, `${namespace} / `), name),
      h("span", { class: "muted" }, `cluster ${cluster}`), deleteButton || ""),
    h("nav", { class: "tabs" }, tabs.map(([key, label]) => h("a", {
      href: `${podLink(cluster, namespace, name)}?tab=${key}`, class: key === tab ? "active" : "", "data-tab": key,
    }, label))),
    body);
  api(base).then(({ data }) => {
    if (tab === "events") eventsTab(body, base);
    else if (tab === "logs") logsTab(body, wsBase, data, query);
    else if (tab === "terminal" && admin) terminalTab(body, wsBase, data);
    else detailsTab(body, data);
  }, (err) => body.replaceChildren(h("p", { class: "error" }, err.message)));
}

function kv(map) {
  const entries = Object.entries(map || {});
  if (!entries.length) return h("span", { class: "muted" }, "none");
  return h("div", { class: "chips" }, entries.map(([k, v]) => h("span", { class: "chip" }, `${k}=${v}`)));
}

function detailsTab(body, pod) {
  const status = pod.status || {};
  const spec = pod.spec || {};
  const states = Object.fromEntries((status.containerStatuses || []).map((c) => [c.name, c]));
  const owner = (pod.ownerReferences || []).map((o) => `${o.kind}/${o.name}`).join(", ");
  const containerState = (c) => {
    const s = (states[c.name] || {}).state || {};
    const key = Object.keys(s)[0];
    return key ? `${key}${s[key].reason ? " (" + s[key].reason + ")" : ""}` : "";
  };
  body.replaceChildren(
    h("dl", { class: "facts" },
      h("dt", {}, "Status"), h("dd", {}, h("span", { class: statusClass(pod.displayStatus), "data-testid": "pod-status" }, pod.displayStatus), ` ready ${pod.ready}, ${pod.restarts} restarts`),
      h("dt", {}, "Node"), h("dd", {}, spec.nodeName || ""),
      h("dt", {}, "IPs"), h("dd", { class: "mono" }, (status.podIPs || []).map((p) => p.ip).join(", ") || status.podIP || ""),
      h("dt", {}, "Host IP"), h("dd", { class: "mono" }, status.hostIP || ""),
      h("dt", {}, "Created"), h("dd", {}, `${pod.createdAt || ""} (${age(pod.createdAt)} ago)`),
      h("dt", {}, "UID"), h("dd", { class: "mono" }, pod.uid),
      h("dt", {}, "Workload"), h("dd", {}, pod.workload ? `${pod.workload.identity} (${pod.workload.identity_source})${pod.workload.kind ? ` · ${pod.workload.kind}/${pod.workload.name}` : ""}` : "none"),
      h("dt", {}, "Owner"), h("dd", {}, owner || "none"),
      h("dt", {}, "Labels"), h("dd", {}, kv(pod.labels)),
      h("dt", {}, "Annotations"), h("dd", {}, kv(pod.annotations))),
    h("h2", {}, "Containers"),
    h("table", {}, h("thead", {}, h("tr", {}, ["Name", "Image", "Ready", "Restarts", "State"].map((t) => h("th", {}, t)))),
      h("tbody", {}, [...(spec.initContainers || []).map((c) => ({ ...c, init: true })), ...(spec.containers || [])].map((c) => h("tr", {},
        h("td", {}, c.name, c.init ? h("span", { class: "muted" }, " (init)") : ""), h("td", { class: "mono" }, c.image),
        h("td", {}, String((states[c.name] || {}).ready ?? "")), h("td", { class: "num" }, (states[c.name] || {}).restartCount ?? ""),
        h("td", {}, containerState(c)))))),
    h("h2", {}, "Conditions"),
    h("table", {}, h("thead", {}, h("tr", {}, ["Type", "Status", "Reason", "Last transition"].map((t) => h("th", {}, t)))),
      h("tbody", {}, (status.conditions || []).map((c) => h("tr", {},
        h("td", {}, c.type), h("td", {}, c.status), h("td", {}, c.reason || ""), h("td", {}, c.lastTransitionTime || ""))))));
}

async function eventsTab(body, base) {
  try {
    const { data } = await api(`${base}/events`);
    body.replaceChildren(data.length
      ? h("table", {}, h("thead", {}, h("tr", {}, ["Type", "Reason", "Message", "Count", "Last seen"].map((t) => h("th", {}, t)))),
        h("tbody", {}, data.map((e) => h("tr", {},
          h("td", {}, h("span", { class: e.type === "Warning" ? "status bad" : "status ok" }, e.type)),
          h("td", {}, e.reason), h("td", {}, e.message), h("td", { class: "num" }, e.count),
          h("td", { title: e.lastSeen || "" }, age(e.lastSeen))))))
      : h("p", { class: "muted" }, "No events for this pod."));
  } catch (err) {
    body.replaceChildren(h("p", { class: "error" }, err.message));
  }
}

function containerNames(pod) {
  const spec = pod.spec || {};
  return [...(spec.containers || []), ...(spec.initContainers || [])].map((c) => c.name);
}

function logsTab(body, wsBase, pod, query) {
  const names = containerNames(pod);
  const container = h("select", { "aria-label": "container" }, names.map((n) => h("option", { value: n, selected: n === query.get("container") }, n)));
  const stamps = h("input", { type: "checkbox", "aria-label": "timestamps" });
  const follow = h("input", { type: "checkbox", checked: true, "aria-label": "follow" });
  const pause = h("button", { type: "button", "data-testid": "pause" }, "Pause");
  const state = h("span", { class: "muted", "data-testid": "log-state" }, "connecting…");
  const out = h("pre", { class: "logs", "data-testid": "logs", tabindex: 0 });
  body.replaceChildren(
    h("div", { class: "toolbar" }, h("label", {}, "Container ", container), h("label", {}, stamps, " timestamps"),
      h("label", {}, follow, " follow"), pause,
      h("button", { type: "button", onclick: () => out.replaceChildren() }, "Clear"), state),
    out);

  let ws = null;
  let paused = false;
  let held = [];
  let last = null; // {timestamp, seq}: where a reconnect resumes
  let closedOnPurpose = false;

  const render = (lines) => {
    const atBottom = out.scrollHeight - out.scrollTop - out.clientHeight < 40;
    const frag = document.createDocumentFragment();
    for (const line of lines) {
      const row = h("div", { class: "line" });
      if (stamps.checked && line.timestamp) row.append(h("span", { class: "ts" }, line.timestamp + " "));
      row.append(line.data.replace(/\n$/, ""));
      frag.append(row);
    }
    out.append(frag);
    while (out.childElementCount > 5000) out.firstElementChild.remove();
    if (atBottom) out.scrollTop = out.scrollHeight;
  };

  const connect = (resume) => {
    closedOnPurpose = false;
    ws = socket(`${wsBase}/logs`);
    ws.onopen = () => {
      const message = { type: "subscribe", container: container.value, follow: follow.checked, timestamps: true };
      if (resume) Object.assign(message, { sinceTime: resume.timestamp, sinceSeq: resume.seq });
      else message.tailLines = 500;
      ws.send(JSON.stringify(message));
      state.textContent = follow.checked ? "following" : "loading";
    };
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "log") {
        last = { timestamp: message.timestamp, seq: message.seq };
        if (paused) held.push(message); else render([message]);
      } else if (message.type === "end") {
        state.textContent = "end of log";
        closedOnPurpose = true;
      } else if (message.type === "error") {
        state.textContent = `error: ${message.message}`;
        closedOnPurpose = true;
      }
    };
    ws.onclose = () => {
      if (closedOnPurpose || !follow.checked) return;
      state.textContent = "disconnected; reconnecting…";
      setTimeout(() => { if (!closedOnPurpose) connect(last); }, 2000);
    };
  };
  const restart = () => {
    closedOnPurpose = true;
    if (ws) ws.close();
    out.replaceChildren();
    held = [];
    last = null;
    connect(null);
  };
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    if (!paused) { render(held); held = []; state.textContent = "following"; } else state.textContent = "paused (lines are kept)";
  });
  container.addEventListener("change", restart);
  follow.addEventListener("change", restart);
  stamps.addEventListener("change", restart);
  connect(null);
  cleanup.push(() => { closedOnPurpose = true; if (ws) ws.close(); });
}

function terminalTab(body, wsBase, pod) {
  if (!window.Terminal) {
    body.replaceChildren(h("p", { class: "error" }, "The terminal's files (xterm.js) are missing from this installation: run scripts/build-ui."));
    return;
  }
  const names = (pod.spec.containers || []).map((c) => c.name);
  const container = h("select", { "aria-label": "container" }, names.map((n) => h("option", { value: n }, n)));
  const command = h("input", { value: "/bin/sh", "aria-label": "command" });
  const connectButton = h("button", { type: "button", class: "primary" }, "Connect");
  const state = h("span", { class: "muted", "data-testid": "term-state" }, "");
  const screen = h("div", { class: "terminal", "data-testid": "terminal" });
  body.replaceChildren(h("div", { class: "toolbar" }, h("label", {}, "Container ", container),
    h("label", {}, "Command ", command), connectButton, state), screen);

  const term = new window.Terminal({ cursorBlink: true, fontSize: 13, convertEol: false, scrollback: 5000 });
  const fit = new window.FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(screen);
  fit.fit();
  let ws = null;
  const send = (message) => { if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message)); };
  term.onData((data) => send({ type: "input", data }));
  term.onResize(({ cols, rows }) => send({ type: "resize", cols, rows }));
  const onResize = () => fit.fit();
  window.addEventListener("resize", onResize);

  const connect = () => {
    if (ws) ws.close();
    term.reset();
    const query = params({ container: container.value, tty: "true" });
    const argv = command.value.trim().split(/\s+/).filter(Boolean).map((c) => `command=${encodeURIComponent(c)}`).join("&");
    ws = socket(`${wsBase}/exec?${query}${argv ? "&" + argv : ""}`);
    state.textContent = "connecting…";
    ws.onopen = () => {
      state.textContent = "connected";
      send({ type: "resize", cols: term.cols, rows: term.rows });
      term.focus();
    };
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "output") term.write(message.data);
      else if (message.type === "exit") { state.textContent = `exited (${message.code})`; term.write(`\r\n[exited with code ${message.code}]\r\n`); }
      else if (message.type === "error") { state.textContent = `error: ${message.message}`; term.write(`\r\n[error: ${message.message}]\r\n`); }
    };
    ws.onclose = (event) => {
      if (!state.textContent.startsWith("exited") && !state.textContent.startsWith("error")) {
        state.textContent = event.code === 1006 ? "refused or disconnected" : "closed";
      }
    };
  };
  connectButton.addEventListener("click", connect);
  connect();
  cleanup.push(() => { if (ws) ws.close(); window.removeEventListener("resize", onResize); term.dispose(); });
}

async function deletePod(base, namespace, name, cluster) {
  const dialog = $("#confirm-dialog");
  $("#confirm-title").textContent = `Delete pod ${name}?`;
  $("#confirm-text").textContent = `Pod ${namespace}/${name} in cluster ${cluster} will be deleted. Its controller, if it has one, makes a new pod.`;
  dialog.returnValue = "";
  dialog.showModal();
  await new Promise((resolve) => dialog.addEventListener("close", resolve, { once: true }));
  if (dialog.returnValue !== "ok") return;
  try {
    await api(base, { method: "DELETE" });
    banner(`Pod ${namespace}/${name} deleted.`);
    go("pods", { namespace });
  } catch (err) {
    banner(`Delete refused: ${err.message}`);
  }
}

// --- Integrations (clusters) ------------------------------------------------------

const PHASES = ["certificate", "reachability", "authentication"];

function integrationsView(view) {
  const list = h("section", { "data-testid": "integrations" }, h("p", { class: "muted" }, "Loading…"));
  view.append(h("h1", {}, "Clusters"),
    h("p", { class: "muted" }, "The cluster podindex is configured with is always watched; these are the clusters registered at run time."),
    list);
  loadIntegrations(list);
  if (may("admin")) view.append(registerForm(() => loadIntegrations(list)));
  else view.append(h("p", { class: "muted" }, "Registering a cluster needs the admin role."));
}

async function loadIntegrations(list) {
  let body;
  try {
    body = await api("/api/v1/integrations/kubernetes");
  } catch (err) {
    list.replaceChildren(h("p", { class: "error" }, err.message + (err.status === 401 ? " Sign in to see them." : "")));
    return;
  }
  list.replaceChildren(body.items.length
    ? h("table", {}, h("thead", {}, h("tr", {}, ["Name", "Id", "Endpoint", "Scope", "Health", "Pods", "Last sync", "Last error"].map((t) => h("th", {}, t)))),
      h("tbody", {}, body.items.map((i) => h("tr", {},
        h("td", {}, i.name), h("td", { class: "mono" }, i.id), h("td", { class: "mono" }, i.endpoint),
        h("td", {}, [i.namespace || "all namespaces", i.label_selector ? ` · ${i.label_selector}` : ""].join("")),
        h("td", {}, h("span", { class: statusClass(i.status) }, i.status), i.consecutive_failures ? ` (${i.consecutive_failures} failures)` : ""),
        h("td", { class: "num" }, i.pods),
        h("td", { title: i.last_sync ? when(i.last_sync) : "" }, i.last_sync ? `${age(i.last_sync)} ago` : "never"),
        h("td", {}, i.last_error ? [h("span", { class: "chip" }, i.last_error_phase || "error"), " ", i.last_error] : "")))))
    : h("p", { class: "muted" }, "No clusters registered."));
}

function registerForm(done) {
  const field = (name, label, attrs = {}) => h("label", {}, label, (attrs.rows ? h("textarea", { name, ...attrs }) : h("input", { name, ...attrs })));
  const form = h("form", { class: "register" },
    h("h2", {}, "Register a cluster"),
    field("name", "Name", { required: true, placeholder: "prod-eu" }),
    field("endpoint", "API server (https)", { placeholder: "https://10.0.0.1:6443" }),
    field("ca_cert", "CA certificate (PEM)", { rows: 4 }),
    field("bearer_token", "Bearer token", { type: "password", autocomplete: "off" }),
    field("namespace", "Namespace (optional)"),
    field("label_selector", "Label selector (optional)"),
    h("p", { class: "muted" }, "…or paste a kubeconfig instead of the endpoint, CA and token:"),
    field("kubeconfig", "kubeconfig", { rows: 4 }),
    field("context", "Context (optional)"));
  const steps = h("ol", { class: "steps", "data-testid": "phases" });
  const outcome = h("p", {});
  const testButton = h("button", { type: "button" }, "Test connection");
  const saveButton = h("button", { type: "submit", class: "primary" }, "Register");
  form.append(h("div", { class: "actions" }, testButton, saveButton), steps, outcome);

  const body = () => {
    const data = Object.fromEntries(new FormData(form).entries());
    for (const key of Object.keys(data)) if (!String(data[key]).trim()) delete data[key];
    if (data.kubeconfig) for (const key of ["endpoint", "ca_cert", "bearer_token", "namespace", "label_selector"]) delete data[key];
    else delete data.context;
    return data;
  };
  const showPhases = (failedPhase, message, ok) => {
    let failed = false;
    steps.replaceChildren(...PHASES.map((phase) => {
      let mark = "✓";
      let cls = "ok";
      if (failed) { mark = "–"; cls = "skipped"; } else if (phase === failedPhase) { mark = "✗"; cls = "bad"; failed = true; }
      if (!ok && !failedPhase) { mark = "–"; cls = "skipped"; }
      return h("li", { class: cls }, `${mark} ${phase}`, phase === failedPhase ? h("div", { class: "muted" }, message) : "");
    }));
  };
  testButton.addEventListener("click", async () => {
    outcome.textContent = "testing…";
    steps.replaceChildren(...PHASES.map((p) => h("li", { class: "skipped" }, `… ${p}`)));
    try {
      const result = await api("/api/v1/integrations/kubernetes/test", { method: "POST", json: body() });
      if (result.status === "success") { showPhases(null, "", true); outcome.textContent = `Reachable: Kubernetes ${result.server_version}`; }
      else { showPhases(result.phase, result.message, false); outcome.textContent = "The test failed."; }
    } catch (err) {
      steps.replaceChildren();
      outcome.textContent = err.message;
    }
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    outcome.textContent = "validating and registering…";
    try {
      const created = await api("/api/v1/integrations/kubernetes", { method: "POST", json: body() });
      showPhases(null, "", true);
      outcome.textContent = `Registered ${created.name} as ${created.id}.`;
      form.reset();
      done();
    } catch (err) {
      if (err.body && err.body.phase) showPhases(err.body.phase, err.body.message, false);
      outcome.textContent = err.message;
    }
  });
  return form;
}

// --- start ------------------------------------------------------------------------

async function start() {
  // The demo prints a URL ending in #signin=<token>: take it, and take it out of the URL.
  const match = location.hash.match(/^#signin=(.+)$/);
  if (match) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    history.replaceState(null, "", `${location.pathname}#/pods`);
  }
  setupSignIn();
  await refreshWho();
  window.addEventListener("hashchange", route);
  route();
}

start();
