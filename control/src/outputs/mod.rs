//! Where detections and frames go: the event thread (terminal, events file), the evidence
//! store and its retention, the `--record` recorder, and the failure counting they share.
pub(crate) mod events;
pub(crate) mod evidence;
pub(crate) mod failing;
pub(crate) mod recorder;
pub(crate) mod report;
