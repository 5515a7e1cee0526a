//! The writes that take capacity for a job and give it back, each one conditional write on the
//! provider's item.

use super::{path, Allocation};
use crate::messages::ProviderState;
use crate::provider::{attr, Transition};
use crate::state::{Cond, Op};

/// The one conditional write that allocates `alloc`: deducts everything it takes (its free GPUs,
/// then those taken from mining), records it under the job id with its `owner` (the claim token
/// of the delivery placing it; refused if the job already holds one there), and requires the
/// provider to be available with enough left.
pub fn commit_allocation(alloc: &Allocation) -> Transition {
    let (gpus, cpu, mem, m) = (alloc.gpus, alloc.cpu, alloc.mem, &alloc.model_key);
    let (take_free, take_mining) = (alloc.gpus - alloc.mining_taken, alloc.mining_taken);
    let alloc_path = path(attr::ALLOCS, &alloc.job_id);
    let mut cond = Cond::eq(attr::STATE, ProviderState::Available)
        .and(Cond::AttrNotExists(alloc_path.clone()))
        .and(Cond::Ge(attr::CPU_FREE.into(), cpu))
        .and(Cond::Ge(attr::MEM_FREE.into(), mem));
    let mut ops = vec![
        Op::Add(path(attr::GPUS_USED, m), gpus),
        Op::Add(attr::CPU_FREE.into(), -cpu),
        Op::Add(attr::CPU_USED.into(), cpu),
        Op::Add(attr::MEM_FREE.into(), -mem),
        Op::Add(attr::MEM_USED.into(), mem),
    ];
    if take_free > 0 {
        cond = cond.and(Cond::Ge(path(attr::GPUS_FREE, m), take_free));
        ops.push(Op::Add(path(attr::GPUS_FREE, m), -take_free));
    }
    if take_mining > 0 {
        cond = cond.and(Cond::Ge(path(attr::GPUS_MINING, m), take_mining));
        ops.push(Op::Add(path(attr::GPUS_MINING, m), -take_mining));
    }
    ops.push(Op::Set(alloc_path, alloc.to_value()));
    Transition::new(cond, ops)
}

/// Whether the provider item records `job_id`'s allocation under `owner`: a commit (or an
/// adoption) whose condition came back false although it applied — its answer lost and its
/// resend arriving after more writes by others than the item remembers — is recognised by the
/// entry it left, whose owner token is this delivery's alone.
pub fn held_by(item: &crate::state::Item, job_id: &str, owner: &str) -> bool {
    let owner_path = format!("{}.owner", path(attr::ALLOCS, job_id));
    !owner.is_empty() && crate::state::expr::get_path(item, &owner_path).and_then(crate::state::Value::as_str) == Some(owner)
}

/// The condition that the allocation of `job_id` is held by `owner` (an empty owner: an entry
/// that never recorded one).
fn owned_by(job_id: &str, owner: &str) -> Cond {
    let owner_path = format!("{}.owner", path(attr::ALLOCS, job_id));
    if owner.is_empty() {
        Cond::AttrNotExists(owner_path)
    } else {
        Cond::eq(&owner_path, owner)
    }
}

/// A takeover adopts what the old owner committed: the entry of `job_id` changes owner from
/// `old` to `new`, only if `old` still holds it (so the old owner's undo can no longer remove it,
/// and an undo that came first makes the adoption fail).
pub fn adopt_allocation(job_id: &str, old: &str, new: &str) -> Transition {
    Transition::new(
        Cond::AttrExists(path(attr::ALLOCS, job_id)).and(owned_by(job_id, old)),
        vec![Op::set(&format!("{}.owner", path(attr::ALLOCS, job_id)), new)],
    )
}

/// Returns exactly what the allocation took: mining GPUs go back to mining, the rest to free.
/// Conditional on the entry still having the owner it was read with, so an undo never removes
/// an entry that a takeover has adopted.
pub fn release_allocation(alloc: &Allocation) -> Transition {
    let m = &alloc.model_key;
    let mut ops = vec![
        Op::Remove(path(attr::ALLOCS, &alloc.job_id)),
        Op::Add(path(attr::GPUS_USED, m), -alloc.gpus),
        Op::Add(attr::CPU_FREE.into(), alloc.cpu),
        Op::Add(attr::CPU_USED.into(), -alloc.cpu),
        Op::Add(attr::MEM_FREE.into(), alloc.mem),
        Op::Add(attr::MEM_USED.into(), -alloc.mem),
    ];
    if alloc.gpus - alloc.mining_taken > 0 {
        ops.push(Op::Add(path(attr::GPUS_FREE, m), alloc.gpus - alloc.mining_taken));
    }
    if alloc.mining_taken > 0 {
        ops.push(Op::Add(path(attr::GPUS_MINING, m), alloc.mining_taken));
    }
    Transition::new(
        Cond::AttrExists(path(attr::ALLOCS, &alloc.job_id)).and(owned_by(&alloc.job_id, &alloc.owner)),
        ops,
    )
}
