//! Where detections and frames go: the evidence store and its retention, the `--record`
//! recorder, and the failure counting every output shares.
pub(crate) mod evidence;
pub(crate) mod failing;
pub(crate) mod recorder;
