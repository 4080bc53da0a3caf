//! The `apps/v1` kinds: Deployment and ReplicaSet.

use crate::core_v1::PodTemplateSpec;
use crate::intstr::IntOrString;
use crate::meta::{ConditionStatus, LabelSelector, ObjectMeta};
use crate::text::Text;
use crate::time::Time;

/// The annotation on a ReplicaSet (and its Deployment) naming its rollout revision.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// The label a Deployment's controller adds to its ReplicaSets' pod templates (the template's
/// hash); a rollback copies a template without it.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

impl ReplicaSet {
    /// The rollout revision it records ([`REVISION_ANNOTATION`]), if any.
    pub fn revision(&self) -> Option<i64> {
        self.metadata.annotations.get(REVISION_ANNOTATION).and_then(|r| r.parse().ok())
    }
}

model! {
    /// Declarative updates for pods through replica sets.
    pub struct Deployment {
        pub metadata: ObjectMeta,
        pub spec: DeploymentSpec,
        pub status: DeploymentStatus,
    }
}

model! {
    /// Deployment spec.
    pub struct DeploymentSpec {
        /// Desired pods; 1 by default.
        pub replicas: Option<i32>,
        pub selector: LabelSelector,
        pub template: PodTemplateSpec,
        [merge retain_keys] pub strategy: DeploymentStrategy,
        pub min_ready_seconds: Option<i32>,
        /// Old replica sets kept for rollback; 10 by default.
        pub revision_history_limit: Option<i32>,
        /// Seconds without progress before the rollout is reported stalled; 600 by default.
        pub progress_deadline_seconds: Option<i32>,
        pub paused: Option<bool>,
    }
}

model! {
    /// How old pods are replaced by new ones.
    pub struct DeploymentStrategy {
        /// `RollingUpdate` (default) or `Recreate`.
        #[serde(rename = "type")]
        pub type_: Option<DeploymentStrategyType>,
        pub rolling_update: Option<RollingUpdateDeployment>,
    }
}

string_enum! {
    /// The kind of deployment strategy.
    pub enum DeploymentStrategyType {
        RollingUpdate = "RollingUpdate",
        Recreate = "Recreate",
    }
}

model! {
    /// Bounds of a rolling update, as a count or a percentage of the desired replicas.
    pub struct RollingUpdateDeployment {
        /// Extra pods above the desired count; 25% (rounded up) by default.
        pub max_surge: Option<IntOrString>,
        /// Pods below the desired count; 25% (rounded down) by default.
        pub max_unavailable: Option<IntOrString>,
    }
}

model! {
    /// Deployment status, written by the deployment controller.
    pub struct DeploymentStatus {
        pub observed_generation: Option<i64>,
        pub replicas: Option<i32>,
        pub updated_replicas: Option<i32>,
        pub ready_replicas: Option<i32>,
        pub available_replicas: Option<i32>,
        pub unavailable_replicas: Option<i32>,
        [merge "type"] pub conditions: Vec<DeploymentCondition>,
        pub collision_count: Option<i32>,
    }
}

model! {
    /// A deployment condition such as `Available` or `Progressing`.
    pub struct DeploymentCondition {
        #[serde(rename = "type")]
        pub type_: Text,
        pub status: ConditionStatus,
        pub last_update_time: Option<Time>,
        pub last_transition_time: Option<Time>,
        pub reason: Option<Text>,
        pub message: Option<Text>,
    }
}

model! {
    /// Keeps a number of identical pods running.
    pub struct ReplicaSet {
        pub metadata: ObjectMeta,
        pub spec: ReplicaSetSpec,
        pub status: ReplicaSetStatus,
    }
}

model! {
    /// ReplicaSet spec.
    pub struct ReplicaSetSpec {
        /// Desired pods; 1 by default.
        pub replicas: Option<i32>,
        pub selector: LabelSelector,
        pub template: PodTemplateSpec,
        pub min_ready_seconds: Option<i32>,
    }
}

model! {
    /// ReplicaSet status, written by the replica set controller.
    pub struct ReplicaSetStatus {
        pub replicas: i32,
        pub fully_labeled_replicas: Option<i32>,
        pub ready_replicas: Option<i32>,
        pub available_replicas: Option<i32>,
        pub observed_generation: Option<i64>,
        [merge "type"] pub conditions: Vec<ReplicaSetCondition>,
    }
}

model! {
    /// A replica set condition.
    pub struct ReplicaSetCondition {
        #[serde(rename = "type")]
        pub type_: Text,
        pub status: ConditionStatus,
        pub last_transition_time: Option<Time>,
        pub reason: Option<Text>,
        pub message: Option<Text>,
    }
}
