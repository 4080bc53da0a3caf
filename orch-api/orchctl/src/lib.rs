//! `orchctl`, modelled on kubectl: the commands, on [`orch_api::Client`].
//!
//! A client only: it depends on orch-api and orch-core, never on orch-raft or RocksDB (the
//! test `tests/deps.rs` checks it). Restoring a backup is `orchd --restore FILE`, which owns
//! the data directory.

#![forbid(unsafe_code)]

pub mod duration;
pub mod table;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use futures_util::StreamExt;
use orch_api::client::WriteResult;
use orch_api::{Client, Error as ApiError, WatchItem, now_ms};
use orch_core::watch::EventType;
use orch_core::{Action, Kind, Object, ObjectKey, PropagationPolicy, Uid};

use crate::table::{Output, headers, render, row, type_name};

/// The most manifest files one `-f DIR` reads.
pub const MANIFEST_FILES_MAX: usize = 1000;

/// What `orchctl` can fail with: a server's answer (printed as kubectl does) or a local
/// problem.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The server refused or failed (or no server could be reached).
    #[error("{}", server_error(.0))]
    Server(#[from] ApiError),
    /// Some of several objects failed; each error was printed as it happened.
    #[error("error: {failed} of {total} objects failed")]
    Partial {
        /// How many failed.
        failed: usize,
        /// Of how many.
        total: usize,
    },
    /// A bad argument, file or manifest.
    #[error("error: {0}")]
    Local(String),
    /// The command `orchctl exec` ran exited with this code (orchctl exits with it too).
    #[error("command terminated with exit code {0}")]
    Exit(i32),
    /// Writing the output failed.
    #[error("error: {0}")]
    Io(#[from] std::io::Error),
}

/// As kubectl prints it: `Error from server (Reason): message`, or, when nothing listens at
/// the server's address, kubectl's own line about the refused connection.
fn server_error(e: &ApiError) -> String {
    match e {
        ApiError::Refused(message) => message.clone(),
        e => format!("Error from server ({}): {}", code_name(e), e.message()),
    }
}

fn code_name(e: &ApiError) -> &'static str {
    match e {
        ApiError::NotFound(_) => "NotFound",
        ApiError::AlreadyExists(_) => "AlreadyExists",
        ApiError::Conflict(_) => "Conflict",
        ApiError::Invalid(_) => "Invalid",
        ApiError::Forbidden(_) => "Forbidden",
        ApiError::OutcomeUnknown(_) => "OutcomeUnknown",
        ApiError::Unavailable { .. } => "ServiceUnavailable",
        ApiError::ResourceExhausted(_) => "RequestEntityTooLarge",
        ApiError::Expired(_) => "Expired",
        ApiError::Timeout(_) => "Timeout",
        ApiError::Refused(_) => "ServiceUnavailable",
        ApiError::Internal(_) => "InternalError",
    }
}

/// `s` percent-encoded for a URL path segment or query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The endpoint of the agent that runs pod `ns/pod` (its Node's `orch.dev/agent-endpoint`
/// annotation) and the container meant (the first when none is named).
async fn agent_of(
    client: &Client,
    ns: &str,
    pod: &str,
    container: Option<String>,
) -> Result<(String, String), CtlError> {
    let (obj, _) = client.get(&ObjectKey::new(Kind::Pod, ns, pod)).await?;
    let Object::Pod(p) = obj else { return Err(local(format!("{pod} is not a pod"))) };
    let container = match container {
        Some(c) if p.spec.containers.iter().any(|x| x.name == c.as_str()) => c,
        Some(c) => return Err(local(format!("container {c} is not valid for pod {pod}"))),
        None => {
            p.spec.containers.first().map(|c| c.name.to_string()).ok_or_else(|| local("the pod has no container"))?
        }
    };
    let node = p.spec.node_name.as_deref().ok_or_else(|| local(format!("pod {pod} is not scheduled to a node yet")))?;
    let (node_obj, _) = client.get(&ObjectKey::new(Kind::Node, "", node)).await?;
    let endpoint = node_obj
        .meta()
        .annotations
        .get("orch.dev/agent-endpoint")
        .ok_or_else(|| local(format!("node {node} has no agent endpoint: no orch-node agent serves it")))?
        .to_owned();
    Ok((endpoint, container))
}

/// The most bytes of an error answer from an agent kept.
const AGENT_ERROR_BYTES_MAX: u64 = 64 << 10;

/// Sends a request to an agent and copies its answer's body to `out` as it arrives; the
/// `X-Exit-Code` header's value, if any. An answer other than 200 is an error with its body.
async fn agent_request(addr: &str, method: &str, path: &str, out: &mut dyn Write) -> Result<Option<i32>, CtlError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let unreachable = |e: std::io::Error| local(format!("the node agent at {addr}: {e}"));
    let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(unreachable)?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nX-Orch-Client: orchctl\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.map_err(unreachable)?;
    let mut head = Vec::new();
    let mut buf = vec![0u8; 16 << 10];
    let body_start = loop {
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if head.len() > 64 << 10 {
            return Err(local(format!("the node agent at {addr} answered nonsense")));
        }
        let n = stream.read(&mut buf).await.map_err(unreachable)?;
        if n == 0 {
            return Err(local(format!("the node agent at {addr} closed the connection")));
        }
        head.extend_from_slice(&buf[..n]);
    };
    let text = String::from_utf8_lossy(&head[..body_start]).into_owned();
    let code: u16 = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let exit = text
        .lines()
        .find_map(|l| l.strip_prefix("X-Exit-Code:").or_else(|| l.strip_prefix("x-exit-code:")))
        .and_then(|v| v.trim().parse().ok());
    let rest = head[body_start..].to_vec();
    if code != 200 {
        let mut body = rest;
        let _ = (&mut stream).take(AGENT_ERROR_BYTES_MAX).read_to_end(&mut body).await;
        return Err(local(String::from_utf8_lossy(&body).trim().to_owned()));
    }
    out.write_all(&rest)?;
    out.flush()?;
    loop {
        let n = stream.read(&mut buf).await.map_err(unreachable)?;
        if n == 0 {
            return Ok(exit);
        }
        out.write_all(&buf[..n])?;
        out.flush()?;
    }
}

fn local(message: impl Into<String>) -> CtlError {
    CtlError::Local(message.into())
}

/// The command line.
#[derive(Debug, Parser)]
#[command(name = "orchctl", version, about = "Controls an orch cluster, as kubectl controls Kubernetes")]
pub struct Cli {
    /// API addresses of the control plane, comma-separated (the leader is found among them).
    #[arg(long, global = true, env = orch_api::SERVER_ENV, default_value = "127.0.0.1:7100")]
    pub server: String,
    /// The namespace.
    #[arg(short = 'n', long, global = true, default_value = "default")]
    pub namespace: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Cmd,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Create or update the objects of manifest files (all of them, atomically, or none).
    Apply(FileArgs),
    /// Create the objects of manifest files (all of them, atomically, or none).
    Create(FileArgs),
    /// Show objects.
    Get(GetArgs),
    /// Show an object in detail, with its events.
    Describe {
        /// The kind.
        kind: String,
        /// The name.
        name: String,
    },
    /// Delete objects by kind and names, or those of manifest files.
    Delete(DeleteArgs),
    /// Set the replicas of a Deployment or ReplicaSet: `scale deploy/web --replicas 3`.
    Scale {
        /// KIND/NAME, or KIND NAME.
        target: Vec<String>,
        /// The new number of replicas.
        #[arg(long)]
        replicas: i32,
    },
    /// Manage a Deployment's rollouts.
    Rollout {
        /// What to do.
        #[command(subcommand)]
        action: RolloutCmd,
    },
    /// Print a pod's logs (from the node agent that runs it).
    Logs {
        /// The pod.
        pod: String,
        /// The container (default: the pod's first).
        #[arg(short = 'c', long)]
        container: Option<String>,
        /// Keep printing what it writes, until the container ends.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
        /// The previous run of the container (before its last restart).
        #[arg(short = 'p', long)]
        previous: bool,
    },
    /// Run a command in a pod's container (no TTY, no stdin), through its node agent.
    Exec {
        /// The pod.
        pod: String,
        /// The container (default: the pod's first).
        #[arg(short = 'c', long)]
        container: Option<String>,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Mark a node unschedulable.
    Cordon {
        /// The node.
        node: String,
    },
    /// Mark a node schedulable.
    Uncordon {
        /// The node.
        node: String,
    },
    /// Cordon a node and delete the pods bound to it.
    Drain {
        /// The node.
        node: String,
        /// Overrides the pods' grace period (seconds).
        #[arg(long)]
        grace_period: Option<i64>,
    },
    /// The control plane.
    Cluster {
        /// What to show or change.
        #[command(subcommand)]
        action: ClusterCmd,
    },
    /// Backups of the whole state.
    Snapshot {
        /// What to do.
        #[command(subcommand)]
        action: SnapshotCmd,
    },
}

/// `delete` arguments beyond the targets.
#[derive(Debug, Args)]
pub struct DeleteFlags {
    /// Treat a missing object as deleted (no error).
    #[arg(long)]
    pub ignore_not_found: bool,
    /// Wait until each object is gone (an object with finalizers, a bound pod in its grace
    /// period or a namespace with content is only marked at first); `--wait=false` returns
    /// once the deletion started.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub wait: bool,
    /// With --wait: give up after this long (`30s`, `5m`, or seconds), one deadline for every
    /// object waited for (0: wait as long as it takes).
    #[arg(long, default_value = "0s", value_parser = duration::parse_duration)]
    pub timeout: std::time::Duration,
}

/// `-f` arguments.
#[derive(Debug, Args)]
pub struct FileArgs {
    /// A manifest file, a directory of them (.yaml, .yml, .json), or - for standard input.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<String>,
}

/// `get` arguments.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The kind (pods, po, deploy, svc, ...).
    pub kind: String,
    /// Names (all when none).
    pub names: Vec<String>,
    /// In every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// A label selector: `app=web,tier!=db`.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// A field selector: `spec.nodeName=n1`, `involvedObject.name=web,type!=Normal`.
    #[arg(long)]
    pub field_selector: Option<String>,
    /// wide, yaml, json or name.
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    /// After listing, print changes as they happen.
    #[arg(short = 'w', long)]
    pub watch: bool,
}

/// `delete` arguments.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The kind, then names (or KIND/NAME ...).
    pub targets: Vec<String>,
    /// Delete the objects of these manifests.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    /// Overrides a pod's grace period (seconds); 0 deletes at once.
    #[arg(long)]
    pub grace_period: Option<i64>,
    /// What becomes of the objects' dependents, as kubectl's: `background` (the object goes
    /// now, its dependents after), `foreground` (the object goes after the dependents that
    /// block it, which controllers mark so), `orphan` (the dependents are kept); `true` and
    /// `false` mean background and orphan.
    #[arg(long, default_value = "background", value_parser = parse_cascade)]
    pub cascade: PropagationPolicy,
    /// How missing objects and pending deletions are treated.
    #[command(flatten)]
    pub flags: DeleteFlags,
}

/// The value of `delete --cascade`.
fn parse_cascade(value: &str) -> Result<PropagationPolicy, String> {
    match value {
        "background" | "true" => Ok(PropagationPolicy::Background),
        "foreground" => Ok(PropagationPolicy::Foreground),
        "orphan" | "false" => Ok(PropagationPolicy::Orphan),
        other => Err(format!("invalid --cascade {other:?}: must be \"background\", \"foreground\" or \"orphan\"")),
    }
}

/// `rollout` actions.
#[derive(Debug, Subcommand)]
pub enum RolloutCmd {
    /// Wait until a Deployment's rollout completes.
    Status {
        /// deploy/NAME, or NAME.
        target: String,
        /// Give up after this long (`30s`, `5m`, or seconds; 0: wait as long as it takes).
        #[arg(long, default_value = "5m", value_parser = duration::parse_duration)]
        timeout: std::time::Duration,
    },
    /// The revisions of a Deployment.
    History {
        /// deploy/NAME, or NAME.
        target: String,
    },
    /// Stop a Deployment's rollouts (it still scales).
    Pause {
        /// deploy/NAME, or NAME.
        target: String,
    },
    /// Let a paused Deployment roll out again.
    Resume {
        /// deploy/NAME, or NAME.
        target: String,
    },
    /// Replace every pod of a Deployment by a rolling update (kubectl's
    /// `kubectl.kubernetes.io/restartedAt` template annotation).
    Restart {
        /// deploy/NAME, or NAME.
        target: String,
    },
    /// Roll a Deployment back.
    Undo {
        /// deploy/NAME, or NAME.
        target: String,
        /// The revision to go back to (default: the previous one).
        #[arg(long, default_value_t = 0)]
        to_revision: i64,
    },
}

/// `cluster` actions.
#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// The members and the leader.
    Members,
    /// Each member's term, role and indexes.
    Status,
    /// Add a member (it catches up as a learner, then votes).
    AddMember {
        /// Its node id.
        id: u64,
        /// Its Raft address.
        raft_address: String,
        /// Its API address.
        api_address: String,
    },
    /// Remove a member.
    RemoveMember {
        /// Its node id.
        id: u64,
    },
}

/// `snapshot` actions.
#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// Save the whole state of a running cluster to a file.
    Save {
        /// The file.
        file: PathBuf,
    },
    /// Check a snapshot file and print what it holds.
    Status {
        /// The file.
        file: PathBuf,
    },
}

fn kind_of(text: &str) -> Result<Kind, CtlError> {
    orch_api::convert::kind_from_str(text, "kind")
        .map_err(|e| local(format!("the server doesn't have a resource type {text:?} ({})", e.message())))
}

/// Reads manifests from files, directories (sorted, non-recursive) or `-` (stdin).
///
/// # Errors
/// When a file cannot be read, or a document does not parse (the error names the file, the
/// document and the field).
pub fn read_manifests(files: &[String]) -> Result<Vec<Object>, CtlError> {
    Ok(read_manifest_documents(files)?.into_iter().map(|(_, o)| o).collect())
}

/// As [`read_manifests`], each object with its manifest as written (what `apply` sends).
///
/// # Errors
/// As [`read_manifests`].
pub fn read_manifest_documents(files: &[String]) -> Result<Vec<(serde_json::Value, Object)>, CtlError> {
    let mut sources: Vec<(String, String)> = Vec::new();
    for f in files {
        if f == "-" {
            let mut text = String::new();
            std::io::stdin().take(orch_core::manifest::MANIFEST_BYTES_MAX as u64 + 1).read_to_string(&mut text)?;
            sources.push(("<stdin>".to_owned(), text));
            continue;
        }
        let path = Path::new(f);
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| local(format!("{f}: {e}")))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")))
                .collect();
            entries.sort();
            if entries.len() > MANIFEST_FILES_MAX {
                return Err(local(format!("{f}: more than {MANIFEST_FILES_MAX} manifest files")));
            }
            for p in entries {
                let text = read_file(&p)?;
                sources.push((p.display().to_string(), text));
            }
        } else {
            sources.push((f.clone(), read_file(path)?));
        }
    }
    let mut objects = Vec::new();
    for (name, text) in sources {
        let parsed = orch_core::manifest::parse_manifest_documents(&text).map_err(|e| local(format!("{name}: {e}")))?;
        for (value, obj) in parsed {
            let mut checked = obj.clone();
            orch_core::apply_defaults(&mut checked);
            let errors = orch_core::validate(&checked);
            if !errors.is_empty() {
                return Err(local(format!(
                    "{name}: {} {:?} is invalid: {errors}",
                    obj.kind(),
                    obj.meta().name.as_str()
                )));
            }
            objects.push((value, obj));
        }
    }
    if objects.is_empty() {
        return Err(local("no objects passed to apply"));
    }
    Ok(objects)
}

fn read_file(path: &Path) -> Result<String, CtlError> {
    let meta = std::fs::metadata(path).map_err(|e| local(format!("{}: {e}", path.display())))?;
    if meta.len() > orch_core::manifest::MANIFEST_BYTES_MAX as u64 {
        return Err(local(format!(
            "{}: larger than {} bytes",
            path.display(),
            orch_core::manifest::MANIFEST_BYTES_MAX
        )));
    }
    std::fs::read_to_string(path).map_err(|e| local(format!("{}: {e}", path.display())))
}

fn print_changes(out: &mut dyn Write, result: &WriteResult) -> Result<(), CtlError> {
    for c in &result.changes {
        writeln!(out, "{}/{} {}", type_name(c.key.kind), c.key.name, c.action)?;
    }
    Ok(())
}

/// `KIND/NAME` or `KIND NAME` to a key.
fn target_key(parts: &[String], namespace: &str, default_kind: Option<Kind>) -> Result<ObjectKey, CtlError> {
    match parts {
        [one] => match one.split_once('/') {
            Some((kind, name)) => Ok(ObjectKey::new(kind_of(kind)?, namespace, name)),
            None => match default_kind {
                Some(kind) => Ok(ObjectKey::new(kind, namespace, one)),
                None => Err(local(format!("{one:?}: give KIND/NAME or KIND NAME"))),
            },
        },
        [kind, name] => Ok(ObjectKey::new(kind_of(kind)?, namespace, name)),
        _ => Err(local("give KIND/NAME or KIND NAME")),
    }
}

fn print_objects(
    out: &mut dyn Write,
    objects: &[Object],
    output: Output,
    all_namespaces: bool,
    single: bool,
) -> Result<(), CtlError> {
    match output {
        Output::Json | Output::Yaml => {
            // One object named alone prints as itself; anything else as kubectl's `v1 List`.
            let values: Vec<serde_json::Value> = objects.iter().map(Object::to_manifest).collect();
            let value = if single && values.len() == 1 {
                values.into_iter().next().unwrap_or_default()
            } else {
                serde_json::json!({"apiVersion": "v1", "items": values, "kind": "List", "metadata": {"resourceVersion": ""}})
            };
            if output == Output::Json {
                writeln!(out, "{}", serde_json::to_string_pretty(&value).map_err(|e| local(e.to_string()))?)?;
            } else {
                write!(out, "{}", serde_yaml_ng::to_string(&value).map_err(|e| local(e.to_string()))?)?;
            }
        }
        Output::Name => {
            for o in objects {
                writeln!(out, "{}/{}", type_name(o.kind()), o.meta().name)?;
            }
        }
        Output::Table | Output::Wide => {
            let Some(first) = objects.first() else { return Ok(()) };
            let wide = output == Output::Wide;
            let kind = first.kind();
            let mut heads = headers(kind, wide);
            let show_ns = all_namespaces && kind.namespaced();
            if show_ns {
                heads.insert(0, "NAMESPACE");
            }
            let now = now_ms();
            let rows: Vec<Vec<String>> = objects
                .iter()
                .map(|o| {
                    let mut r = row(o, wide, now);
                    if show_ns {
                        r.insert(0, o.meta().namespace_str().to_owned());
                    }
                    r
                })
                .collect();
            write!(out, "{}", render(&heads, &rows))?;
        }
    }
    Ok(())
}

/// Runs one command against the cluster, writing what it shows to `out` and notes and the
/// errors of single objects to `err` (kubectl's standard error: "No resources found", each
/// failed deletion of several).
///
/// # Errors
/// The server's error, or a local one (bad arguments, unreadable or invalid manifests).
pub async fn run(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), CtlError> {
    let client = Client::new(cli.server.split(',').map(str::trim).filter(|s| !s.is_empty()))?;
    let ns = cli.namespace.as_str();
    match cli.command {
        Cmd::Apply(f) => {
            // The manifests as written: an empty list clears, an absent one leaves what is live.
            let mut manifests = Vec::new();
            for (mut value, obj) in read_manifest_documents(&f.files)? {
                if obj.kind().namespaced()
                    && obj.meta().namespace.is_none()
                    && let Some(serde_json::Value::Object(meta)) = value.get_mut("metadata")
                {
                    meta.insert("namespace".into(), ns.into());
                }
                manifests.push(value);
            }
            print_changes(out, &client.apply_manifests(&manifests).await?)
        }
        Cmd::Create(f) => {
            let objects = with_namespace(read_manifests(&f.files)?, ns);
            print_changes(out, &client.create_all(&objects).await?)
        }
        Cmd::Get(g) => get(&client, g, ns, out, err).await,
        Cmd::Describe { kind, name } => describe(&client, kind_of(&kind)?, ns, &name, out).await,
        Cmd::Delete(d) => delete(&client, d, ns, out, err).await,
        Cmd::Scale { target, replicas } => {
            let key = target_key(&target, ns, None)?;
            client.scale(&key, replicas).await?;
            writeln!(out, "{}/{} scaled", type_name(key.kind), key.name)?;
            Ok(())
        }
        Cmd::Rollout { action } => rollout(&client, action, ns, out).await,
        Cmd::Logs { pod, container, follow, tail, previous } => {
            let (addr, container) = agent_of(&client, ns, &pod, container).await?;
            let mut path = format!("/containerLogs/{}/{}/{}?", encode(ns), encode(&pod), encode(&container));
            if follow {
                path.push_str("follow=true&");
            }
            if previous {
                path.push_str("previous=true&");
            }
            if let Some(n) = tail {
                path.push_str(&format!("tailLines={n}&"));
            }
            agent_request(&addr, "GET", &path, out).await.map(|_| ())
        }
        Cmd::Exec { pod, container, command } => {
            let (addr, container) = agent_of(&client, ns, &pod, container).await?;
            let query: Vec<String> = command.iter().map(|c| format!("command={}", encode(c))).collect();
            let path = format!("/exec/{}/{}/{}?{}", encode(ns), encode(&pod), encode(&container), query.join("&"));
            match agent_request(&addr, "POST", &path, out).await? {
                Some(0) | None => Ok(()),
                Some(code) => Err(CtlError::Exit(code)),
            }
        }
        Cmd::Cordon { node } => set_unschedulable(&client, &node, true, out).await,
        Cmd::Uncordon { node } => set_unschedulable(&client, &node, false, out).await,
        Cmd::Drain { node, grace_period } => {
            set_unschedulable(&client, &node, true, out).await?;
            let (pods, _) = client.list(Kind::Pod, None, "", Some(&node)).await?;
            for p in pods {
                let key = p.key();
                match client.delete(&key, grace_period).await {
                    Ok(_) | Err(ApiError::NotFound(_)) => writeln!(out, "evicting pod {}/{}", key.namespace, key.name)?,
                    Err(e) => return Err(e.into()),
                }
            }
            writeln!(out, "node/{node} drained")?;
            Ok(())
        }
        Cmd::Cluster { action } => cluster(&client, action, out).await,
        Cmd::Snapshot { action } => snapshot(&client, action, out).await,
    }
}

/// Objects that name no namespace go to `-n`'s.
fn with_namespace(mut objects: Vec<Object>, ns: &str) -> Vec<Object> {
    for o in &mut objects {
        if o.kind().namespaced() && o.meta().namespace.is_none() && ns != "default" {
            o.meta_mut().namespace = Some(ns.into());
        }
    }
    objects
}

async fn get(client: &Client, g: GetArgs, ns: &str, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), CtlError> {
    let kind = kind_of(&g.kind)?;
    let output = match g.output.as_deref() {
        None => Output::Table,
        Some(o) => o.parse().map_err(local)?,
    };
    let namespace = (!g.all_namespaces).then_some(ns);
    let selector = g.selector.unwrap_or_default();
    let fields = g.field_selector.unwrap_or_default();
    if !g.names.is_empty() && (!selector.is_empty() || !fields.is_empty()) {
        // As kubectl: a selector selects among all objects, names name them.
        return Err(local("selectors cannot be used when passing resource names"));
    }
    let (objects, revision) = if g.names.is_empty() {
        client.list_fields(kind, namespace, &selector, &fields).await?
    } else {
        // Watch from the oldest state read, so that no change after any of the reads is missed.
        let mut objects = Vec::new();
        let mut revision = u64::MAX;
        for name in &g.names {
            let (object, read_at) = client.get(&ObjectKey::new(kind, ns, name)).await?;
            objects.push(object);
            revision = revision.min(read_at);
        }
        (objects, revision)
    };
    if objects.is_empty() && !g.watch && matches!(output, Output::Table | Output::Wide) {
        // To standard error, as kubectl: a script reading the output gets nothing.
        if kind.namespaced() && !g.all_namespaces {
            writeln!(err, "No resources found in {ns} namespace.")?;
        } else {
            writeln!(err, "No resources found")?;
        }
        return Ok(());
    }
    print_objects(out, &objects, output, g.all_namespaces, !g.names.is_empty())?;
    out.flush()?;
    if !g.watch {
        return Ok(());
    }
    let mut stream = client.watch_fields(revision, kind.as_str(), namespace.unwrap_or(""), &selector, &fields);
    let mut printed_header = !objects.is_empty();
    while let Some(item) = stream.next().await {
        let WatchItem::Events { events, .. } = item? else { continue };
        for e in events {
            if !g.names.is_empty() && !g.names.iter().any(|n| *n == e.object.meta().name.as_str()) {
                continue;
            }
            match output {
                Output::Table | Output::Wide => {
                    let wide = output == Output::Wide;
                    let mut r = row(&e.object, wide, now_ms());
                    let mut heads = headers(kind, wide);
                    if g.all_namespaces && kind.namespaced() {
                        heads.insert(0, "NAMESPACE");
                        r.insert(0, e.object.meta().namespace_str().to_owned());
                    }
                    let text = render(&heads, &[r]);
                    let text =
                        if printed_header { text.lines().skip(1).collect::<Vec<_>>().join("\n") + "\n" } else { text };
                    printed_header = true;
                    write!(out, "{text}")?;
                }
                other => print_objects(out, &[e.object], other, g.all_namespaces, true)?,
            }
            out.flush()?;
        }
    }
    Ok(())
}

async fn describe(client: &Client, kind: Kind, ns: &str, name: &str, out: &mut dyn Write) -> Result<(), CtlError> {
    let (object, _) = client.get(&ObjectKey::new(kind, ns, name)).await?;
    writeln!(out, "Name:         {}", object.meta().name)?;
    if kind.namespaced() {
        writeln!(out, "Namespace:    {}", object.meta().namespace_str())?;
    }
    writeln!(out, "Kind:         {}", kind.as_str())?;
    let labels: Vec<String> = object.meta().labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    writeln!(out, "Labels:       {}", if labels.is_empty() { "<none>".to_owned() } else { labels.join(",") })?;
    if let Some(uid) = object.meta().uid {
        writeln!(out, "UID:          {uid}")?;
    }
    if let Some(rv) = object.meta().resource_version {
        writeln!(out, "Revision:     {rv}")?;
    }
    let manifest = object.to_manifest();
    for section in ["spec", "status"] {
        if let Some(v) = manifest.get(section) {
            writeln!(out, "{}:", section[..1].to_ascii_uppercase() + &section[1..])?;
            let yaml = serde_yaml_ng::to_string(v).map_err(|e| local(e.to_string()))?;
            for line in yaml.lines() {
                writeln!(out, "  {line}")?;
            }
        }
    }
    // As kubectl: the events about this object (this uid, not an earlier one of the name),
    // selected by the server. A cluster-scoped object's events are in `default`.
    let event_ns = if kind.namespaced() { object.meta().namespace_str() } else { "default" };
    let mut about =
        format!("involvedObject.kind={},involvedObject.name={}", kind.as_str(), orch_core::fields::escape(name));
    if kind.namespaced() {
        about.push_str(&format!(",involvedObject.namespace={}", orch_core::fields::escape(event_ns)));
    }
    if let Some(uid) = object.meta().uid {
        about.push_str(&format!(",involvedObject.uid={uid}"));
    }
    let (mut mine, _) = client.list_fields(Kind::Event, Some(event_ns), "", &about).await?;
    // Selected again here: a server older than field selectors ignores them and lists the
    // namespace's every event.
    if let Ok(selector) = orch_core::fields::FieldSelector::parse(&about, Some(Kind::Event)) {
        mine.retain(|e| selector.matches(e));
    }
    // Oldest first, as kubectl.
    mine.sort_by_key(|e| match e {
        Object::Event(e) => e.last_timestamp.or(e.first_timestamp),
        _ => None,
    });
    if mine.is_empty() {
        writeln!(out, "Events:       <none>")?;
    } else {
        writeln!(out, "Events:")?;
        let now = now_ms();
        let rows: Vec<Vec<String>> = mine.iter().map(|e| row(e, false, now)).collect();
        for line in render(&headers(Kind::Event, false), &rows).lines() {
            writeln!(out, "  {line}")?;
        }
    }
    Ok(())
}

async fn delete(
    client: &Client,
    d: DeleteArgs,
    ns: &str,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CtlError> {
    let keys: Vec<ObjectKey> = if d.files.is_empty() {
        match d.targets.as_slice() {
            [] => return Err(local("give KIND NAME..., KIND/NAME..., or -f FILE")),
            [first, ..] if first.contains('/') => {
                d.targets.iter().map(|t| target_key(std::slice::from_ref(t), ns, None)).collect::<Result<_, _>>()?
            }
            [kind, names @ ..] => {
                if names.is_empty() {
                    return Err(local("give the names of the objects to delete"));
                }
                let kind = kind_of(kind)?;
                names.iter().map(|n| ObjectKey::new(kind, ns, n)).collect()
            }
        }
    } else {
        with_namespace(read_manifests(&d.files)?, ns)
            .iter()
            .map(|o| {
                let mut o = o.clone();
                orch_core::apply_defaults(&mut o);
                o.key()
            })
            .collect()
    };
    // As kubectl: every object is tried first (each failure printed as it happens), then the
    // marked ones are waited for, under one deadline: a namespace whose content comes later in
    // the list goes once that content is deleted.
    let total = keys.len();
    let mut failed = 0;
    let mut marked = Vec::new();
    for key in keys {
        let name = format!("{}/{}", type_name(key.kind), key.name);
        let result = match client.delete_with(&key, d.grace_period, Some(d.cascade)).await {
            Ok(result) => result,
            Err(ApiError::NotFound(_)) if d.flags.ignore_not_found => continue,
            Err(e @ ApiError::Refused(_)) => return Err(e.into()),
            Err(e) => {
                writeln!(err, "{}", CtlError::Server(e))?;
                failed += 1;
                continue;
            }
        };
        match result.changes.iter().find(|c| c.key == key) {
            Some(c) if c.action == Action::Deleted => writeln!(out, "{name} deleted")?,
            // Marked only: its finalizers, its grace period or its content hold it.
            Some(c) if d.flags.wait => marked.push((key, name, c.uid, result.revision)),
            Some(_) => writeln!(
                out,
                "{name} marked for deletion (it goes when its finalizers, grace period or content allow)"
            )?,
            None => {
                writeln!(err, "error: {name}: the server reported no change to it")?;
                failed += 1;
            }
        }
    }
    let deadline = (!d.flags.timeout.is_zero()).then(|| tokio::time::Instant::now() + d.flags.timeout);
    for (key, name, uid, revision) in marked {
        let waited = wait_until_gone(client, &key, uid, revision);
        let waited = match deadline {
            None => waited.await,
            Some(at) => tokio::time::timeout_at(at, waited).await.unwrap_or_else(|_| {
                Err(local(format!("timed out waiting for the deletion of {name} (it is still being deleted)")))
            }),
        };
        match waited {
            Ok(()) => writeln!(out, "{name} deleted")?,
            Err(e) => {
                writeln!(err, "{e}")?;
                failed += 1;
            }
        }
    }
    if failed > 0 { Err(CtlError::Partial { failed, total }) } else { Ok(()) }
}

/// Returns once the object `key` with `uid` is gone, following its kind's events from
/// `revision` (and reading it again when that history expired).
async fn wait_until_gone(client: &Client, key: &ObjectKey, uid: Uid, mut revision: u64) -> Result<(), CtlError> {
    loop {
        let mut events = client.watch(revision, key.kind.as_str(), &key.namespace, "", "");
        let mut expired = false;
        while let Some(item) = events.next().await {
            match item {
                Ok(WatchItem::Events { events, .. }) => {
                    let gone = events.iter().any(|e| {
                        e.event_type == EventType::Deleted
                            && e.object.meta().name.as_str() == key.name
                            && e.object.meta().uid == Some(uid)
                    });
                    if gone {
                        return Ok(());
                    }
                }
                Ok(WatchItem::Progress(_)) => {}
                Err(ApiError::Expired(_)) => {
                    expired = true;
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !expired {
            return Err(local(format!("the watch of {key} ended before it was deleted")));
        }
        match client.get(key).await {
            Err(ApiError::NotFound(_)) => return Ok(()),
            Ok((o, _)) if o.meta().uid != Some(uid) => return Ok(()),
            Ok((_, read_at)) => revision = read_at,
            Err(e) => return Err(e.into()),
        }
    }
}

fn deployment_name(target: &str) -> Result<&str, CtlError> {
    match target.split_once('/') {
        Some((kind, name)) if kind_of(kind)? == Kind::Deployment => Ok(name),
        Some((kind, _)) => Err(local(format!("rollout works on deployments, not {kind:?}"))),
        None => Ok(target),
    }
}

async fn rollout(client: &Client, action: RolloutCmd, ns: &str, out: &mut dyn Write) -> Result<(), CtlError> {
    match action {
        RolloutCmd::History { target } => {
            let name = deployment_name(&target)?;
            let revisions = client.rollout_history(ns, name).await?;
            writeln!(out, "deployment.apps/{name}")?;
            let rows: Vec<Vec<String>> = revisions
                .iter()
                .map(|r| {
                    let cause = if r.change_cause.is_empty() { "<none>".to_owned() } else { r.change_cause.clone() };
                    vec![r.revision.to_string(), cause]
                })
                .collect();
            write!(out, "{}", render(&["REVISION", "CHANGE-CAUSE"], &rows))?;
            if revisions.is_empty() {
                writeln!(out, "(no revisions yet: the deployment controller has made no ReplicaSet)")?;
            }
            Ok(())
        }
        RolloutCmd::Pause { target } => edit_deployment(client, ns, deployment_name(&target)?, Edit::Pause, out).await,
        RolloutCmd::Resume { target } => {
            edit_deployment(client, ns, deployment_name(&target)?, Edit::Resume, out).await
        }
        RolloutCmd::Restart { target } => {
            edit_deployment(client, ns, deployment_name(&target)?, Edit::Restart, out).await
        }
        RolloutCmd::Undo { target, to_revision } => {
            let name = deployment_name(&target)?;
            client.rollout_undo(ns, name, to_revision).await?;
            writeln!(out, "deployment.apps/{name} rolled back")?;
            Ok(())
        }
        RolloutCmd::Status { target, timeout } => {
            let name = deployment_name(&target)?;
            let key = ObjectKey::new(Kind::Deployment, ns, name);
            // 0: as long as it takes (kubectl's `--timeout=0s`).
            let wait = if timeout.is_zero() { duration::DURATION_MAX } else { timeout };
            let deadline = tokio::time::Instant::now() + wait;
            let mut last = String::new();
            loop {
                let (d, read_at) = client.get(&key).await?;
                let v = d.to_manifest();
                let get = |p: &str| v.pointer(p).and_then(serde_json::Value::as_i64).unwrap_or(0);
                let (generation, observed) = (get("/metadata/generation"), get("/status/observedGeneration"));
                let (want, replicas, updated, available) = (
                    get("/spec/replicas"),
                    get("/status/replicas"),
                    get("/status/updatedReplicas"),
                    get("/status/availableReplicas"),
                );
                let timed_out = v.pointer("/status/conditions").and_then(|c| c.as_array()).is_some_and(|c| {
                    c.iter().any(|c| c["type"] == "Progressing" && c["reason"] == orch_core::deployment::TIMED_OUT)
                });
                // kubectl's order of checks.
                let waiting = if observed < generation {
                    "Waiting for deployment spec update to be observed...".to_owned()
                } else if timed_out {
                    return Err(local(format!("deployment {name:?} exceeded its progress deadline")));
                } else if updated < want {
                    format!(
                        "Waiting for deployment {name:?} rollout to finish: {updated} out of {want} new replicas have been updated..."
                    )
                } else if replicas > updated {
                    format!(
                        "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
                        replicas - updated
                    )
                } else if available < updated {
                    format!(
                        "Waiting for deployment {name:?} rollout to finish: {available} of {updated} updated replicas are available..."
                    )
                } else {
                    writeln!(out, "deployment {name:?} successfully rolled out")?;
                    return Ok(());
                };
                // Each state once, as kubectl prints it.
                if waiting != last {
                    writeln!(out, "{waiting}")?;
                    out.flush()?;
                    last = waiting;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(local(format!("timed out waiting for the rollout of deployment {name:?}")));
                }
                // Follow the deployment until it changes. A watch error the client could not
                // resume from ends the command; an expired revision reads it again (a fresh
                // read gives a fresh revision), no faster than once a second.
                let mut events = client.watch(read_at, "Deployment", ns, "", "");
                let followed = tokio::time::timeout_at(deadline, async {
                    while let Some(item) = events.next().await {
                        match item {
                            Ok(WatchItem::Events { events, .. }) => {
                                if events.iter().any(|e| e.object.meta().name.as_str() == name) {
                                    return Ok(true);
                                }
                            }
                            Ok(WatchItem::Progress(_)) => {}
                            Err(ApiError::Expired(_)) => return Ok(false),
                            Err(e) => return Err(e),
                        }
                    }
                    Err(ApiError::unavailable("the watch of the deployment ended"))
                })
                .await;
                match followed {
                    Ok(Ok(true)) | Err(_) => {}
                    Ok(Ok(false)) => {
                        tokio::time::sleep_until(
                            deadline.min(tokio::time::Instant::now() + std::time::Duration::from_secs(1)),
                        )
                        .await
                    }
                    Ok(Err(e)) => return Err(e.into()),
                }
            }
        }
    }
}

/// A change `orchctl rollout` makes to a Deployment.
#[derive(Clone, Copy)]
enum Edit {
    Pause,
    Resume,
    Restart,
}

/// The annotation `rollout restart` sets on the pod template, as kubectl.
const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";

/// Reads the Deployment, changes it and writes it back under its resourceVersion, again on a
/// conflict (kubectl patches; the effect is the same).
async fn edit_deployment(
    client: &Client,
    ns: &str,
    name: &str,
    edit: Edit,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let key = ObjectKey::new(Kind::Deployment, ns, name);
    for _ in 0..8 {
        let (obj, _) = client.get(&key).await?;
        let Object::Deployment(d) = &obj else { return Err(local(format!("{key} is not a deployment"))) };
        let mut d = (**d).clone();
        let paused = d.spec.paused == Some(true);
        let done = match edit {
            Edit::Pause if paused => return Err(local(format!("deployments.apps {name:?} is already paused"))),
            Edit::Resume if !paused => return Err(local(format!("deployments.apps {name:?} is not paused"))),
            Edit::Restart if paused => {
                return Err(local("can't restart paused deployment (run rollout resume first)"));
            }
            Edit::Pause => {
                d.spec.paused = Some(true);
                "paused"
            }
            Edit::Resume => {
                d.spec.paused = None;
                "resumed"
            }
            Edit::Restart => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX));
                // Whole seconds, as kubectl writes it.
                let at = orch_core::Time::from_millis(now - now.rem_euclid(1000));
                d.spec.template.metadata.annotations.insert(RESTARTED_AT_ANNOTATION, at.to_string());
                "restarted"
            }
        };
        match client.update(&Object::from(d)).await {
            Ok(_) => {
                writeln!(out, "deployment.apps/{name} {done}")?;
                return Ok(());
            }
            Err(ApiError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(local(format!("deployment.apps/{name} kept changing; try again")))
}

async fn set_unschedulable(client: &Client, node: &str, value: bool, out: &mut dyn Write) -> Result<(), CtlError> {
    let key = ObjectKey::new(Kind::Node, "", node);
    for _ in 0..8 {
        let (obj, _) = client.get(&key).await?;
        let Object::Node(n) = &obj else { return Err(local(format!("{key} is not a node"))) };
        if n.spec.unschedulable.unwrap_or(false) == value {
            writeln!(out, "node/{node} already {}", if value { "cordoned" } else { "uncordoned" })?;
            return Ok(());
        }
        let mut n = (**n).clone();
        n.spec.unschedulable = Some(value);
        match client.update(&Object::from(n)).await {
            Ok(_) => {
                writeln!(out, "node/{node} {}", if value { "cordoned" } else { "uncordoned" })?;
                return Ok(());
            }
            Err(ApiError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(local(format!("node/{node} kept changing; try again")))
}

async fn cluster(client: &Client, action: ClusterCmd, out: &mut dyn Write) -> Result<(), CtlError> {
    match action {
        ClusterCmd::Members => {
            let info = client.members().await?;
            print_members(out, &info)
        }
        ClusterCmd::Status => {
            let info = client.members().await?;
            let mut rows = Vec::new();
            for m in &info.members {
                let row = match member_status(&m.api_address).await {
                    Ok(s) => vec![
                        m.id.to_string(),
                        m.api_address.clone(),
                        s.role.clone(),
                        s.term.to_string(),
                        if s.leader == 0 { "-".to_owned() } else { s.leader.to_string() },
                        s.commit_index.to_string(),
                        s.applied_index.to_string(),
                        s.snapshot_index.to_string(),
                    ],
                    Err(e) => vec![m.id.to_string(), m.api_address.clone(), format!("unreachable: {}", e.message())],
                };
                rows.push(row);
            }
            write!(
                out,
                "{}",
                render(&["ID", "API", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "SNAPSHOT"], &rows)
            )?;
            Ok(())
        }
        ClusterCmd::AddMember { id, raft_address, api_address } => {
            let info = client.add_member(id, &raft_address, &api_address).await?;
            writeln!(out, "member {id} added")?;
            print_members(out, &info)
        }
        ClusterCmd::RemoveMember { id } => {
            let info = client.remove_member(id).await?;
            writeln!(out, "member {id} removed")?;
            print_members(out, &info)
        }
    }
}

/// One member's own status, asked directly (no redirect).
async fn member_status(api: &str) -> Result<orch_api::pb::StatusResponse, ApiError> {
    let options = orch_api::ClientOptions {
        retry_for: std::time::Duration::ZERO,
        request_timeout: std::time::Duration::from_secs(3),
        ..orch_api::ClientOptions::default()
    };
    Client::with_options([api], options)?.status().await
}

fn print_members(out: &mut dyn Write, info: &orch_api::client::MembersInfo) -> Result<(), CtlError> {
    let rows: Vec<Vec<String>> = info
        .members
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                if m.id == info.leader {
                    "leader"
                } else if m.voter {
                    "voter"
                } else {
                    "learner"
                }
                .to_owned(),
                m.raft_address.clone(),
                if m.api_address.is_empty() { "<none>".to_owned() } else { m.api_address.clone() },
            ]
        })
        .collect();
    write!(out, "{}", render(&["ID", "ROLE", "RAFT", "API"], &rows))?;
    Ok(())
}

async fn snapshot(client: &Client, action: SnapshotCmd, out: &mut dyn Write) -> Result<(), CtlError> {
    match action {
        SnapshotCmd::Save { file } => {
            let (revision, bytes) = client.snapshot().await?;
            // Check before keeping: a snapshot that does not restore is no backup.
            let state = orch_core::State::from_snapshot(&bytes)
                .map_err(|e| local(format!("the snapshot does not verify: {e}")))?;
            let partial = file.with_extension("partial");
            std::fs::write(&partial, &bytes).map_err(|e| local(format!("{}: {e}", partial.display())))?;
            std::fs::File::open(&partial)
                .and_then(|f| f.sync_all())
                .map_err(|e| local(format!("{}: {e}", partial.display())))?;
            std::fs::rename(&partial, &file).map_err(|e| local(format!("{}: {e}", file.display())))?;
            writeln!(
                out,
                "Snapshot saved at {} (revision {revision}, {} objects, {} bytes)",
                file.display(),
                state.len(),
                bytes.len()
            )?;
            Ok(())
        }
        SnapshotCmd::Status { file } => {
            let bytes = std::fs::read(&file).map_err(|e| local(format!("{}: {e}", file.display())))?;
            let state =
                orch_core::State::from_snapshot(&bytes).map_err(|e| local(format!("{}: {e}", file.display())))?;
            writeln!(
                out,
                "revision {}, {} objects, {} bytes, digest verified",
                state.applied_index(),
                state.len(),
                bytes.len()
            )?;
            Ok(())
        }
    }
}
