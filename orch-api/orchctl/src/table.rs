//! kubectl-like tables, computed from each object's JSON form.

use orch_core::{Kind, Object, Time};
use serde_json::Value;

/// How `get` prints objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// A table.
    Table,
    /// A table with more columns.
    Wide,
    /// YAML documents.
    Yaml,
    /// JSON (one object, or a `List`).
    Json,
    /// `kind/name` per line.
    Name,
}

impl std::str::FromStr for Output {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "wide" => Ok(Output::Wide),
            "yaml" => Ok(Output::Yaml),
            "json" => Ok(Output::Json),
            "name" => Ok(Output::Name),
            _ => Err(format!("output: Unsupported value: {s:?}: supported values: wide, yaml, json, name")),
        }
    }
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn n(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(text: String) -> String {
    if text.is_empty() { "<none>".to_owned() } else { text }
}

/// `5s`, `3m`, `2h`, `4d`, as kubectl writes ages.
pub fn age(created: &str, now_ms: i64) -> String {
    let Ok(t) = created.parse::<Time>() else { return "<unknown>".to_owned() };
    let secs = ((now_ms - t.as_millis()) / 1000).max(0);
    match secs {
        0..120 => format!("{secs}s"),
        120..7_200 => format!("{}m", secs / 60),
        7_200..172_800 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// The `kind/name` form (`pod/web`, `deployment.apps/web`).
pub fn type_name(kind: Kind) -> String {
    let lower = kind.as_str().to_ascii_lowercase();
    match kind.api_version().split_once('/') {
        Some((group, _)) => format!("{lower}.{group}"),
        None => lower,
    }
}

/// The column heads of a kind's table.
pub fn headers(kind: Kind, wide: bool) -> Vec<&'static str> {
    let mut h = match kind {
        Kind::Pod => vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        Kind::Node => vec!["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        Kind::Service => vec!["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"],
        Kind::Endpoints => vec!["NAME", "ENDPOINTS", "AGE"],
        Kind::Deployment => vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        Kind::ReplicaSet => vec!["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        Kind::Namespace => vec!["NAME", "STATUS", "AGE"],
        Kind::Event => vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        Kind::ConfigMap => vec!["NAME", "DATA", "AGE"],
        Kind::Secret => vec!["NAME", "TYPE", "DATA", "AGE"],
    };
    if wide {
        match kind {
            Kind::Pod => h.extend(["IP", "NODE"]),
            Kind::Node => h.extend(["INTERNAL-IP"]),
            Kind::Service => h.extend(["SELECTOR"]),
            Kind::Deployment | Kind::ReplicaSet => h.extend(["CONTAINERS", "IMAGES", "SELECTOR"]),
            _ => {}
        }
    }
    h
}

/// One object's row.
pub fn row(object: &Object, wide: bool, now_ms: i64) -> Vec<String> {
    let v = object.to_manifest();
    let name = s(&v, "/metadata/name").to_owned();
    let created = age(s(&v, "/metadata/creationTimestamp"), now_ms);
    let terminating = !s(&v, "/metadata/deletionTimestamp").is_empty();
    let containers = |p: &str| -> Vec<Value> { v.pointer(p).and_then(Value::as_array).cloned().unwrap_or_default() };
    let mut r = match object.kind() {
        Kind::Pod => {
            let specs = containers("/spec/containers");
            let statuses = containers("/status/containerStatuses");
            let ready = statuses.iter().filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true)).count();
            let restarts: i64 = statuses.iter().map(|c| n(c, "/restartCount")).sum();
            let status = if terminating {
                "Terminating".to_owned()
            } else {
                let waiting = statuses.iter().find_map(|c| c.pointer("/state/waiting/reason").and_then(Value::as_str));
                waiting.map_or_else(|| or_none(s(&v, "/status/phase").to_owned()), str::to_owned)
            };
            vec![name, format!("{ready}/{}", specs.len()), status, restarts.to_string(), created]
        }
        Kind::Node => {
            let conditions = containers("/status/conditions");
            let ready = conditions.iter().find(|c| s(c, "/type") == "Ready").map(|c| s(c, "/status").to_owned());
            // As kubectl: `NotReady` for any `Ready` but True (False, or Unknown when the node
            // lifecycle controller stopped hearing it), `Unknown` with no `Ready` at all.
            let mut status = match ready.as_deref() {
                Some("True") => "Ready".to_owned(),
                Some(_) => "NotReady".to_owned(),
                None => "Unknown".to_owned(),
            };
            if v.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
                status.push_str(",SchedulingDisabled");
            }
            vec![
                name,
                status,
                "<none>".to_owned(),
                created,
                or_none(s(&v, "/status/nodeInfo/kubeletVersion").to_owned()),
            ]
        }
        Kind::Service => {
            let ports: Vec<String> = containers("/spec/ports")
                .iter()
                .map(|p| {
                    let node_port =
                        p.get("nodePort").and_then(Value::as_i64).map(|np| format!(":{np}")).unwrap_or_default();
                    let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                    format!("{}{node_port}/{proto}", n(p, "/port"))
                })
                .collect();
            vec![
                name,
                or_none(s(&v, "/spec/type").to_owned()),
                or_none(s(&v, "/spec/clusterIP").to_owned()),
                "<none>".to_owned(),
                or_none(ports.join(",")),
                created,
            ]
        }
        Kind::Endpoints => {
            let mut eps = Vec::new();
            for subset in containers("/subsets") {
                let ports: Vec<i64> = subset
                    .get("ports")
                    .and_then(Value::as_array)
                    .map(|ps| ps.iter().map(|p| n(p, "/port")).collect())
                    .unwrap_or_default();
                for a in subset.get("addresses").and_then(Value::as_array).into_iter().flatten() {
                    for p in &ports {
                        eps.push(format!("{}:{p}", s(a, "/ip")));
                    }
                }
            }
            let shown = if eps.len() > 3 {
                format!("{} + {} more...", eps[..3].join(","), eps.len() - 3)
            } else {
                eps.join(",")
            };
            vec![name, or_none(shown), created]
        }
        Kind::Deployment => vec![
            name,
            format!("{}/{}", n(&v, "/status/readyReplicas"), n(&v, "/spec/replicas")),
            n(&v, "/status/updatedReplicas").to_string(),
            n(&v, "/status/availableReplicas").to_string(),
            created,
        ],
        Kind::ReplicaSet => vec![
            name,
            n(&v, "/spec/replicas").to_string(),
            n(&v, "/status/replicas").to_string(),
            n(&v, "/status/readyReplicas").to_string(),
            created,
        ],
        Kind::Namespace => {
            let phase = if terminating { "Terminating" } else { s(&v, "/status/phase") };
            vec![name, or_none(phase.to_owned()), created]
        }
        Kind::ConfigMap | Kind::Secret => {
            let keys = |p: &str| v.pointer(p).and_then(Value::as_object).map_or(0, serde_json::Map::len);
            let data = (keys("/data") + keys("/binaryData")).to_string();
            if object.kind() == Kind::Secret {
                vec![name, s(&v, "/type").to_owned(), data, created]
            } else {
                vec![name, data, created]
            }
        }
        Kind::Event => {
            let last = ["/lastTimestamp", "/eventTime", "/metadata/creationTimestamp"]
                .iter()
                .map(|p| s(&v, p))
                .find(|t| !t.is_empty())
                .unwrap_or("");
            // As kubectl: "2m (x3 over 10m)" for an event seen more than once.
            let count = v.pointer("/count").and_then(serde_json::Value::as_i64).unwrap_or(1);
            let first = s(&v, "/firstTimestamp");
            let seen = if count > 1 && !first.is_empty() {
                format!("{} (x{count} over {})", age(last, now_ms), age(first, now_ms))
            } else {
                age(last, now_ms)
            };
            vec![
                seen,
                s(&v, "/type").to_owned(),
                s(&v, "/reason").to_owned(),
                format!("{}/{}", s(&v, "/involvedObject/kind").to_ascii_lowercase(), s(&v, "/involvedObject/name")),
                s(&v, "/message").to_owned(),
            ]
        }
    };
    if wide {
        match object.kind() {
            Kind::Pod => {
                r.extend([or_none(s(&v, "/status/podIP").to_owned()), or_none(s(&v, "/spec/nodeName").to_owned())])
            }
            Kind::Node => {
                let ip = containers("/status/addresses")
                    .iter()
                    .find(|a| s(a, "/type") == "InternalIP")
                    .map(|a| s(a, "/address").to_owned());
                r.push(or_none(ip.unwrap_or_default()));
            }
            Kind::Service => r.push(or_none(selector_text(v.pointer("/spec/selector")))),
            Kind::Deployment | Kind::ReplicaSet => {
                let cs = containers("/spec/template/spec/containers");
                r.push(cs.iter().map(|c| s(c, "/name")).collect::<Vec<_>>().join(","));
                r.push(cs.iter().map(|c| s(c, "/image")).collect::<Vec<_>>().join(","));
                r.push(or_none(selector_text(v.pointer("/spec/selector/matchLabels"))));
            }
            _ => {}
        }
    }
    r
}

fn selector_text(map: Option<&Value>) -> String {
    map.and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}

/// Lays rows out in columns separated by three spaces, as kubectl does.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths[i] + 3 - cell.chars().count();
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    };
    line(headers.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        let t = "2026-11-28T10:00:00Z";
        let base = t.parse::<Time>().expect("valid").as_millis();
        assert_eq!(age(t, base + 5_000), "5s");
        assert_eq!(age(t, base + 600_000), "10m");
        assert_eq!(age(t, base + 3 * 3_600_000), "3h");
        assert_eq!(age(t, base + 5 * 86_400_000), "5d");
        assert_eq!(age("garbage", base), "<unknown>");
    }

    #[test]
    fn tables_align_columns() {
        let out =
            render(&["NAME", "STATUS"], &[vec!["web-1".into(), "Running".into()], vec!["a".into(), "Pending".into()]]);
        assert_eq!(out, "NAME    STATUS\nweb-1   Running\na       Pending\n");
        assert_eq!(type_name(Kind::Deployment), "deployment.apps");
        assert_eq!(type_name(Kind::Pod), "pod");
    }

    /// An event seen more than once shows its count, as kubectl's "2m (x3 over 10m)".
    #[test]
    fn an_event_seen_again_shows_its_count() {
        let event = |extra: &str| {
            let yaml = format!(
                "apiVersion: v1\nkind: Event\nmetadata: {{name: e}}\ninvolvedObject: {{kind: Pod, name: p}}\n\
                 reason: Scheduled\nlastTimestamp: '2026-11-28T10:08:00Z'\n{extra}"
            );
            orch_core::parse_manifests(&yaml).expect("valid").remove(0)
        };
        let now = "2026-11-28T10:10:00Z".parse::<Time>().expect("valid").as_millis();
        let once = row(&event("count: 1\n"), false, now);
        assert_eq!((once[0].as_str(), once[3].as_str()), ("2m", "pod/p"));
        let thrice = row(&event("count: 3\nfirstTimestamp: '2026-11-28T10:00:00Z'\n"), false, now);
        assert_eq!(thrice[0], "2m (x3 over 10m)");
    }

    /// A node's STATUS as kubectl prints it: Ready, NotReady for `Ready` False or Unknown (a
    /// node the lifecycle controller stopped hearing), Unknown without a `Ready` condition,
    /// and `,SchedulingDisabled` when cordoned.
    #[test]
    fn node_status_reads_like_kubectl() {
        let status = |status_yaml: &str| {
            let yaml = format!("apiVersion: v1\nkind: Node\nmetadata: {{name: n}}\n{status_yaml}");
            let node = orch_core::parse_manifests(&yaml).expect("valid").remove(0);
            row(&node, false, 0)[1].clone()
        };
        assert_eq!(status("status: {conditions: [{type: Ready, status: 'True'}]}"), "Ready");
        assert_eq!(status("status: {conditions: [{type: Ready, status: 'False'}]}"), "NotReady");
        assert_eq!(status("status: {conditions: [{type: Ready, status: Unknown}]}"), "NotReady");
        assert_eq!(status("status: {conditions: [{type: MemoryPressure, status: 'False'}]}"), "Unknown");
        assert_eq!(
            status("spec: {unschedulable: true}\nstatus: {conditions: [{type: Ready, status: Unknown}]}"),
            "NotReady,SchedulingDisabled"
        );
    }
}
