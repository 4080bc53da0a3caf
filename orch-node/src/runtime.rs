//! The runtime seam: what runs pods. The agent's decisions ([`orch_core::agent`]) are carried
//! out through it; the process runtime ([`crate::process`]) is the default, and orch-sim has a
//! simulated one. A runtime reports what happens by itself (a run's exit) on the channel it
//! was made with; the answers to requests are the futures' outputs.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use orch_core::agent::{Found, Volumes};
use orch_core::core_v1::{Container, Pod, Probe};
use orch_core::ids::Uid;
use orch_core::object::ObjectKey;

/// A pod a runtime still has when the agent starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundPod {
    /// The pod.
    pub key: ObjectKey,
    /// Its uid.
    pub uid: Uid,
    /// Its address (none: the host's network).
    pub ip: Option<String>,
    /// Its containers' latest runs.
    pub containers: Vec<Found>,
}

/// What runs pods.
pub trait Runtime: Send + Sync + 'static {
    /// Makes a pod's sandbox; its address (none: the host's network).
    fn create_sandbox(&self, uid: Uid, pod: Arc<Pod>) -> impl Future<Output = Result<Option<String>, String>> + Send;

    /// Starts run `attempt` of the pod's container at index `container` with its own
    /// variables `env` (resolved by the core) and the pod's volumes in place as of `volumes`
    /// (or newer); the reason (`RunContainerError`, `CreateContainerConfigError`) and message
    /// if it cannot.
    #[allow(clippy::too_many_arguments)]
    fn start(
        &self,
        uid: Uid,
        pod: Arc<Pod>,
        container: usize,
        attempt: u32,
        ip: Option<String>,
        env: Vec<(String, String)>,
        volumes: Arc<Volumes>,
    ) -> impl Future<Output = Result<(), (&'static str, String)>> + Send;

    /// Puts the pod's volumes in place as of `volumes`, unless a newer version is (a
    /// ConfigMap or Secret they project changed).
    fn update_volumes(&self, uid: Uid, volumes: Arc<Volumes>) -> impl Future<Output = Result<(), String>> + Send;

    /// Sends `signal` to a run's processes.
    fn signal(&self, uid: Uid, container: &str, attempt: u32, signal: i32) -> impl Future<Output = ()> + Send;

    /// SIGKILLs a run's processes.
    fn kill(&self, uid: Uid, container: &str, attempt: u32) -> impl Future<Output = ()> + Send;

    /// SIGKILLs everything in the pod.
    fn kill_pod(&self, uid: Uid) -> impl Future<Output = ()> + Send;

    /// Removes a pod's sandbox (its processes are gone): its address, namespaces, cgroups
    /// and files.
    fn remove_sandbox(&self, uid: Uid) -> impl Future<Output = Result<(), String>> + Send;

    /// Runs a command in a container's namespaces (an exec probe, `orchctl exec`): its exit
    /// code and output (cut to a bound).
    fn exec(
        &self,
        uid: Uid,
        container: &str,
        argv: Vec<String>,
        timeout: Duration,
    ) -> impl Future<Output = Result<(i32, Vec<u8>), String>> + Send;

    /// The pods it still has (after an agent restart), their runs' exits reported as they
    /// are.
    fn found(&self) -> impl Future<Output = Vec<FoundPod>> + Send;

    /// Tries a probe of a container's run: an exec probe through [`Runtime::exec`], an
    /// httpGet or tcpSocket from the node to `host` (the pod's address) within `timeout`, as
    /// the kubelet probes. Ok, or why it failed. A simulated runtime answers by itself.
    fn probe(
        &self,
        uid: Uid,
        container: &Container,
        probe: &Probe,
        host: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), String>> + Send {
        async move {
            match &probe.exec {
                Some(exec) => {
                    let argv = exec.command.iter().map(ToString::to_string).collect();
                    match self.exec(uid, &container.name, argv, timeout).await {
                        Ok((0, _)) => Ok(()),
                        Ok((code, out)) => Err(format!("command exited {code}: {}", String::from_utf8_lossy(&out))),
                        Err(e) => Err(e),
                    }
                }
                None => crate::prober::network(probe, container, host, timeout).await,
            }
        }
    }
}
