//! `run`'s signals: SIGINT/SIGTERM stop it (the main loop polls `STOP`), SIGHUP
//! (`systemctl reload`) reopens the events file.
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;

pub static STOP: AtomicBool = AtomicBool::new(false);
pub static HANGUP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGHUP {
        // Here, not in the main loop: an event written after the signal goes to the new file.
        crate::outputs::events::REOPEN_EVENTS.store(true, Relaxed);
        HANGUP.store(true, Relaxed);
    } else {
        STOP.store(true, Relaxed);
    }
}

/// SIGINT/SIGTERM stop; SIGHUP (`systemctl reload`) reopens the events file.
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}
