//! Wall time and minor page faults of each phase of loading a model, logged at debug level
//! (`RUST_LOG=novapay::engine=debug`): where load time goes (header, tokenizer, repacking, page
//! faults) is measured, not guessed, on the operator's machine too.

use std::time::Instant;

pub(crate) struct LoadPhases {
    what: String,
    start: Instant,
    last: Instant,
    faults_at_start: u64,
    faults_at_last: u64,
}

impl LoadPhases {
    pub(crate) fn start(what: impl Into<String>) -> Self {
        let now = Instant::now();
        let faults = minor_faults();
        Self {
            what: what.into(),
            start: now,
            last: now,
            faults_at_start: faults,
            faults_at_last: faults,
        }
    }

    /// Logs the time and faults since the previous phase (or the start).
    pub(crate) fn phase(&mut self, name: &str) {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        let (now, faults) = (Instant::now(), minor_faults());
        tracing::debug!(
            load = %self.what,
            phase = name,
            ms = format!("{:.1}", (now - self.last).as_secs_f64() * 1e3),
            minor_faults = faults.saturating_sub(self.faults_at_last),
            "load phase"
        );
        self.last = now;
        self.faults_at_last = faults;
    }

    pub(crate) fn done(&self) {
        tracing::debug!(
            load = %self.what,
            ms = format!("{:.1}", self.start.elapsed().as_secs_f64() * 1e3),
            minor_faults = minor_faults().saturating_sub(self.faults_at_start),
            "load total"
        );
    }
}

/// The process's minor page faults so far (Linux `/proc/self/stat`, field 10); 0 elsewhere.
fn minor_faults() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses and may contain spaces.
            let rest = s.rsplit_once(')')?.1;
            rest.split_whitespace().nth(7)?.parse().ok()
        })
        .unwrap_or(0)
}
