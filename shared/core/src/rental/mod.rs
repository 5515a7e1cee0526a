//! A rental: the allocated job run as a container on its provider's node (issue 21).
//!
//! - [`names`]: where a rental lives in the cluster — one namespace per customer, one pod per
//!   job — derived from ids alone, so every controller pass (and every replay) finds the same
//!   objects.
//! - [`life`]: what the broker does with what it observes of a rental's pod — mark it running
//!   (billing starts on the broker's clock), wait, recreate it, delete it, or release the job
//!   with its end reason. Pure: the controller reads the pod, this decides, the controller acts.
//!
//! What a rental's objects must be, built from the stored job, is the job's:
//! `job::rental_spec` (it reads the job's request and allocation).

pub mod life;
pub mod names;
