//! A pod's status as the agent reports it, by the kubelet's rules:
//! - each container's `state` (waiting with its reason, running since, or terminated with
//!   its exit code and reason `Completed`, `Error` or `OOMKilled`), `lastState` (how the run
//!   before ended), `ready`, `started`, `restartCount`;
//! - the phase (the kubelet's `getPhase`): `Pending` while a container waits that never ran;
//!   `Running` while one runs, or when all stopped and they restart (`Always`, or `OnFailure`
//!   with one failed); `Succeeded` when all stopped with 0 and stay stopped; `Failed` when
//!   all stopped for good and one failed. A terminal phase is never left;
//! - the conditions `PodScheduled`, `Initialized`, `ContainersReady` and `Ready` (no
//!   readiness gates: Ready is ContainersReady), each with the time it last changed;
//!   conditions of other types are kept as the store has them;
//! - `podIP`/`podIPs` (the host's address for a pod on the host network), `hostIP`,
//!   `startTime`.

use super::{CONTAINER_CREATING, Ctr, PodRec, Run, Settings, Terminated};
use crate::core_v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, Pod,
    PodCondition, PodIp, PodPhase, PodStatus, RestartPolicy,
};
use crate::meta::ConditionStatus;
use crate::text::Text;
use crate::time::Time;

/// The condition types the agent owns, in the order it writes them.
const OURS: [&str; 4] = ["PodScheduled", "Initialized", "ContainersReady", "Ready"];

fn terminated(t: &Terminated) -> ContainerStateTerminated {
    let reason = if t.exit.oom_killed {
        "OOMKilled"
    } else if t.exit.code == 0 && t.exit.signal.is_none() {
        "Completed"
    } else {
        "Error"
    };
    ContainerStateTerminated {
        exit_code: t.exit.code,
        signal: t.exit.signal,
        reason: Some(reason.into()),
        message: None,
        started_at: t.started_ms.map(Time::from_millis),
        finished_at: Some(Time::from_millis(t.finished_ms)),
    }
}

fn waiting(c: &Ctr) -> ContainerState {
    let (reason, message) = c.waiting.clone().unwrap_or((CONTAINER_CREATING, None));
    ContainerState {
        waiting: Some(Box::new(ContainerStateWaiting {
            reason: Some(reason.into()),
            message: message.map(Text::from),
        })),
        ..ContainerState::default()
    }
}

fn container_status(rec: &PodRec, c: &Ctr, image: &Text) -> ContainerStatus {
    let last = c
        .last
        .as_ref()
        .map(|t| ContainerState { terminated: Some(Box::new(terminated(t))), ..ContainerState::default() });
    let (state, last_state) = match (&c.run, last) {
        (Run::Running { started_ms }, last) => (
            ContainerState {
                running: Some(ContainerStateRunning { started_at: Some(Time::from_millis(*started_ms)) }),
                ..ContainerState::default()
            },
            last.unwrap_or_default(),
        ),
        // Stayed stopped: this is how it ended.
        (Run::Done, Some(last)) => (last, ContainerState::default()),
        (_, last) => (waiting(c), last.unwrap_or_default()),
    };
    let running = c.running_since().is_some();
    ContainerStatus {
        name: c.name.clone(),
        state,
        last_state,
        ready: running && c.ready,
        restart_count: c.restarts,
        image: image.clone(),
        // The run that runs, or else the last that ran (a start that failed is none).
        container_id: match (running, &c.last) {
            (true, _) => Some(c.attempt),
            (false, Some(last)) if last.attempt > 0 => Some(last.attempt),
            _ => None,
        }
        .map(|attempt| Text::from(format!("orch://{}/{}/{attempt}", rec.uid, c.name))),
        started: Some(running && c.started),
    }
}

/// The kubelet's phase of a pod whose containers stand as `containers`.
fn phase(policy: RestartPolicy, containers: &[&Ctr]) -> PodPhase {
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in containers {
        match (&c.run, &c.last) {
            (Run::Running { .. }, _) => running += 1,
            (_, Some(last)) => {
                stopped += 1;
                if last.exit.code == 0 && last.exit.signal.is_none() {
                    succeeded += 1;
                }
            }
            // Ended for good without ever running (its pod stopped first).
            (Run::Done, None) => stopped += 1,
            (_, None) => waiting += 1,
        }
    }
    if waiting > 0 {
        PodPhase::Pending
    } else if running > 0 {
        PodPhase::Running
    } else if stopped == 0 {
        PodPhase::Pending
    } else if containers.iter().any(|c| !c.done()) || policy == RestartPolicy::Always {
        // Some will run again.
        PodPhase::Running
    } else if stopped == succeeded {
        PodPhase::Succeeded
    } else {
        PodPhase::Failed
    }
}

/// The status to report for `pod`, kept as `rec`, at `now` (the time of any condition that
/// changes).
pub(crate) fn compute(settings: &Settings, rec: &PodRec, pod: &Pod, now: i64) -> PodStatus {
    let old = rec.acked.as_ref().unwrap_or(&pod.status);
    // A condition keeps the time it last changed in the agent's own reports (as the kubelet's
    // status manager keeps its cached status's), whatever another writer put over it since;
    // else the store's (a write of unknown fate that landed).
    let since_from: Vec<&PodStatus> = rec.written.iter().chain([old]).collect();
    let at = Time::from_millis(now);
    let containers: Vec<&Ctr> =
        pod.spec.containers.iter().filter_map(|s| rec.containers.iter().find(|c| c.name == s.name)).collect();
    let policy = pod.spec.restart_policy.unwrap_or(RestartPolicy::Always);
    let phase = match old.phase {
        Some(p @ (PodPhase::Succeeded | PodPhase::Failed)) => p,
        _ => phase(policy, &containers),
    };
    let container_statuses: Vec<ContainerStatus> =
        pod.spec.containers.iter().zip(&containers).map(|(spec, c)| container_status(rec, c, &spec.image)).collect();
    let terminal = matches!(phase, PodPhase::Succeeded | PodPhase::Failed);
    let unready: Vec<&str> = container_statuses.iter().filter(|s| !s.ready).map(|s| s.name.as_str()).collect();
    let ready = !terminal && unready.is_empty() && !containers.is_empty();
    let condition = |type_: &str, status: bool, reason: Option<&str>, message: Option<String>| {
        let status = if status { ConditionStatus::True } else { ConditionStatus::False };
        let since = since_from
            .iter()
            .flat_map(|s| &s.conditions)
            .find(|c| c.type_ == type_ && c.status == status)
            .and_then(|c| c.last_transition_time)
            .unwrap_or(at);
        let mut c = PodCondition::new(type_, status, since);
        c.set_detail(reason.map(Text::from), message.map(Text::from));
        c
    };
    let (reason, message) = if terminal {
        (Some("PodCompleted"), None)
    } else if ready {
        (None, None)
    } else {
        (Some("ContainersNotReady"), Some(format!("containers with unready status: [{}]", unready.join(" "))))
    };
    let mut conditions = vec![
        old.conditions
            .iter()
            .find(|c| c.type_ == "PodScheduled")
            .cloned()
            .unwrap_or_else(|| condition("PodScheduled", true, None, None)),
        condition("Initialized", true, None, None),
        condition("ContainersReady", ready, reason, message.clone()),
        condition("Ready", ready, reason, message),
    ];
    conditions.extend(old.conditions.iter().filter(|c| !OURS.contains(&c.type_.as_str())).cloned());
    let ip = rec.ip.clone();
    PodStatus {
        phase: Some(phase),
        conditions,
        container_statuses,
        pod_ip: ip.as_ref().map(Text::from),
        host_ip: settings.host_ip.as_ref().map(Text::from),
        start_time: rec.start_ms.map(Time::from_millis),
        reason: None,
        message: None,
        pod_ips: ip.map(|ip| vec![PodIp { ip: ip.into() }]).unwrap_or_default(),
    }
}
