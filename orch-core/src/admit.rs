//! What a proposer checks before a request becomes a log entry.
//!
//! Apply validates every command, but by then the command is an entry in every replica's log.
//! [`check_request`] runs the checks that need no state before the request is proposed: the
//! session rule of `acked_below` ([`crate::sessions::Sessions::refuse`]), every list and string of what the request carries within its limit ([`crate::bounds`]: limits
//! that bound what an entry carries, some on fields apply never reads), keys within
//! [`KEY_BYTES_MAX`], and the object as a create or update would store it valid
//! ([`crate::validation::validate`], on the same defaults and initial status apply uses, and
//! a node's pod range, [`crate::validation::validate_pod_cidr`]).
//! An invalid object gets the error apply would give it, though where apply would first
//! report a state error (not found, a conflict) admission reports the invalid field; what it
//! accepts may still be refused by apply for reasons that need the state (a name taken, a
//! precondition, an immutable field, a status that does not fit the stored spec).
//!
//! One rule is admission's alone: a create that carries `metadata.resourceVersion` is refused, as
//! Kubernetes' API server refuses it; apply clears it, as it has since the first format, so that
//! an entry written before the rule keeps its meaning.
//!
//! The entry's bytes have their own check, [`crate::codec::encode_entry`].

use std::sync::Arc;

use crate::bounds::check_bounds;
use crate::command::{ApplyError, Command, Request};
use crate::defaults::apply_defaults;
use crate::object::{Object, ObjectKey};
use crate::state::set_initial_status;
use crate::time::Time;
use crate::validation::{FieldErrors, validate};

/// The most bytes of a name or namespace in a key (a DNS-1123 subdomain is at most 253).
pub const KEY_BYTES_MAX: usize = 253;

/// How apply treats the status an object carries.
#[derive(Clone, Copy)]
enum Status {
    /// A create: the kind's initial status replaces it (a node keeps what it reports).
    Initial,
    /// An update: the stored status replaces it.
    Ignored,
    /// A status write: merged with the stored object, whose spec it is validated against.
    Written,
}

/// Checks `request` as far as that is possible without the state.
///
/// # Errors
/// The error apply would answer: [`ApplyError::Invalid`] naming each field and rule,
/// [`ApplyError::BadRequest`] for a key or batch over its limit.
pub fn check_request(request: &Request) -> Result<(), ApplyError> {
    if let Some(reason) = crate::sessions::Sessions::refuse(request.serial, request.acked_below) {
        return Err(ApplyError::BadRequest { reason });
    }
    check_command(&request.command, false)
}

fn check_command(command: &Command, in_batch: bool) -> Result<(), ApplyError> {
    match command {
        Command::Create(obj) => {
            if let Some(rv) = obj.meta().resource_version {
                // As Kubernetes' API server refuses it. Apply clears it instead (it always has:
                // a log written before this rule keeps its meaning), so the rule lives here.
                let mut errors = FieldErrors::default();
                errors.invalid("metadata.resourceVersion", rv, "must not be set on an object to be created");
                return Err(invalid(obj, errors));
            }
            check_object(obj, Status::Initial)
        }
        // An apply may become an update, which ignores the status: check it as one.
        Command::Apply(obj) => check_object(obj, Status::Ignored),
        Command::Update(obj) => check_object(obj, Status::Ignored),
        // The manifest as it will be written when nothing is live (as a merge it is validated
        // when applied, against the live object).
        Command::ApplyManifest(text) => check_object(&crate::merge::submitted(text)?.1, Status::Ignored),
        Command::UpdateStatus(obj) => check_object(obj, Status::Written),
        Command::Delete { key, grace_period_seconds, .. } => {
            check_key(key)?;
            match grace_period_seconds {
                Some(g) if *g < 0 => Err(ApplyError::BadRequest {
                    reason: format!("gracePeriodSeconds: Invalid value: {g}: must be greater than or equal to 0"),
                }),
                _ => Ok(()),
            }
        }
        Command::Bind { namespace, name, node, .. } => {
            for (field, value) in [("namespace", namespace), ("name", name), ("node", node)] {
                check_key_part(field, value)?;
            }
            Ok(())
        }
        Command::Scale { key, replicas } => {
            check_key(key)?;
            crate::command::check_scale(key, *replicas)
        }
        Command::RolloutUndo { namespace, name, to_revision } => {
            check_key_part("namespace", namespace)?;
            check_key_part("name", name)?;
            crate::command::check_rollout_undo(*to_revision)
        }
        Command::Batch(commands) => {
            crate::command::check_batch_shape(commands.len(), in_batch)?;
            for (i, c) in commands.iter().enumerate() {
                check_command(c, true).map_err(|e| crate::command::batch_error(i, e))?;
            }
            Ok(())
        }
    }
}

fn check_key(key: &ObjectKey) -> Result<(), ApplyError> {
    check_key_part("namespace", &key.namespace)?;
    check_key_part("name", &key.name)
}

fn check_key_part(field: &str, value: &str) -> Result<(), ApplyError> {
    if value.len() > KEY_BYTES_MAX {
        return Err(ApplyError::BadRequest {
            reason: format!("{field}: Too long: may not be more than {KEY_BYTES_MAX} bytes"),
        });
    }
    Ok(())
}

fn invalid(obj: &Object, errors: FieldErrors) -> ApplyError {
    ApplyError::Invalid { kind: obj.kind(), name: obj.meta().name.to_string(), errors }
}

fn check_object(obj: &Object, status: Status) -> Result<(), ApplyError> {
    let errors = check_bounds(obj);
    if !errors.is_empty() {
        return Err(invalid(obj, errors));
    }
    if let Status::Written = status {
        // The spec a status write is checked against is the stored one.
        return Ok(());
    }
    let mut stored = obj.clone();
    apply_defaults(&mut stored);
    match status {
        Status::Initial => set_initial_status(&mut stored, Time::from_millis(0)),
        Status::Ignored => clear_status(&mut stored),
        Status::Written => {}
    }
    let mut errors = validate(&stored);
    // This build stamps its entries with rules 7 on: a node created has a pod range that is a
    // CIDR (an update may keep one stored under older rules: apply decides, against it).
    if let (Status::Initial, Object::Node(node)) = (status, &stored) {
        errors.0.extend(crate::validation::validate_pod_cidr(node, None).0);
    }
    if errors.is_empty() { Ok(()) } else { Err(invalid(&stored, errors)) }
}

fn clear_status(obj: &mut Object) {
    match obj {
        Object::Namespace(o) => Arc::make_mut(o).status = Default::default(),
        Object::Node(o) => Arc::make_mut(o).status = Default::default(),
        Object::Pod(o) => Arc::make_mut(o).status = Default::default(),
        Object::Service(o) => Arc::make_mut(o).status = Default::default(),
        Object::Deployment(o) => Arc::make_mut(o).status = Default::default(),
        Object::ReplicaSet(o) => Arc::make_mut(o).status = Default::default(),
        Object::Endpoints(_) | Object::Event(_) | Object::ConfigMap(_) | Object::Secret(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ClientId;
    use crate::manifest::parse_manifests;
    use crate::text::Text;
    use crate::{Entry, State};

    fn pod(edit: impl FnOnce(&mut crate::Pod)) -> Object {
        let mut obj = parse_manifests(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: x}]}",
        )
        .expect("valid")
        .remove(0);
        let Object::Pod(p) = &mut obj else { unreachable!("a pod") };
        edit(Arc::make_mut(p));
        obj
    }

    fn request(command: Command) -> Request {
        Request { client: ClientId(1), serial: 1, acked_below: 0, retry: false, command }
    }

    /// Whatever the pre-check refuses, apply refuses with the same error.
    fn apply_refuses_alike(command: Command) {
        let pre = check_request(&request(command.clone())).expect_err("refused before proposing");
        let mut state = State::new();
        let out = state.apply(1, Entry::new(0, vec![request(command)]));
        assert_eq!(out.outcomes[0].as_ref().expect_err("refused by apply"), &pre);
    }

    #[test]
    fn a_valid_create_passes() {
        assert_eq!(check_request(&request(Command::Create(pod(|_| {})))), Ok(()));
    }

    #[test]
    fn what_apply_refuses_without_the_state_is_refused_before_it_is_proposed() {
        apply_refuses_alike(Command::Create(pod(|p| p.spec.containers[0].args = vec![Text::new(); 50_000])));
        apply_refuses_alike(Command::Create(pod(|p| p.spec.containers[0].name = Text::new())));
        apply_refuses_alike(Command::Batch(vec![
            Command::Create(pod(|_| {})),
            Command::Create(pod(|p| p.spec.containers.clear())),
        ]));
        apply_refuses_alike(Command::Batch(vec![Command::Batch(vec![])]));
        // Rules 7: a node's pod range that is no CIDR.
        let node = crate::manifest::parse_manifests(
            "apiVersion: v1\nkind: Node\nmetadata: {name: n}\nspec: {podCIDR: '10.244.1.0'}\n",
        )
        .expect("parses")
        .remove(0);
        apply_refuses_alike(Command::Create(node));
    }

    #[test]
    fn a_create_that_carries_a_resource_version_is_refused() {
        let carrying = pod(|p| p.metadata.resource_version = Some(crate::Revision(7)));
        let err = check_request(&request(Command::Create(carrying.clone()))).expect_err("refused").to_string();
        assert!(
            err.contains("metadata.resourceVersion: Invalid value: 7: must not be set on an object to be created"),
            "{err}"
        );
        let err = check_request(&request(Command::Batch(vec![
            Command::Create(pod(|_| {})),
            Command::Create(carrying.clone()),
        ])))
        .expect_err("refused in a batch")
        .to_string();
        assert!(err.contains("metadata.resourceVersion"), "{err}");
        // An update or an apply carries it as its precondition.
        assert_eq!(check_request(&request(Command::Update(carrying.clone()))), Ok(()));
        assert_eq!(check_request(&request(Command::Apply(carrying))), Ok(()));
    }

    #[test]
    fn what_apply_would_drop_is_still_bounded() {
        // An update ignores the status it carries, but the entry would carry it.
        let cmd = Command::Update(pod(|p| p.status.message = Some("m".repeat(40_000).into())));
        let err = check_request(&request(cmd)).expect_err("refused").to_string();
        assert!(err.contains("status.message: Too long: may not be more than 32768 bytes"), "{err}");
        // ... and it is not validated beyond its bounds.
        let cmd = Command::Update(pod(|p| p.status.pod_ip = Some("not an ip".into())));
        assert_eq!(check_request(&request(cmd)), Ok(()));
        let long_key = ObjectKey::new(crate::Kind::Pod, "default", &"n".repeat(300));
        let cmd = Command::Delete {
            key: long_key,
            grace_period_seconds: None,
            preconditions: Default::default(),
            propagation_policy: None,
        };
        let err = check_request(&request(cmd)).expect_err("refused").to_string();
        assert_eq!(err, "bad request: name: Too long: may not be more than 253 bytes");
    }
}
