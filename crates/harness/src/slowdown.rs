//! A test hook, documented in the README with the others: `RANDBENCH_TEST_DELAY=BACKEND=MS`
//! (e.g. `candle-cpu=20`) sleeps that many milliseconds inside every timed step (a training
//! step, a meta-training unroll) of cells on that backend, so that regression detection can be
//! tested end to end on a real run. Inert unless set.

use randbench_core::backend::BackendId;
use std::time::Duration;

pub const DELAY_VAR: &str = "RANDBENCH_TEST_DELAY";

/// The backend and delay `RANDBENCH_TEST_DELAY` names; `Ok(None)` when it is unset.
pub fn configured() -> Result<Option<(BackendId, Duration)>, String> {
    let Ok(spec) = std::env::var(DELAY_VAR) else { return Ok(None) };
    let bad =
        |why: String| format!("{DELAY_VAR}={spec}: {why}; write BACKEND=MS, e.g. candle-cpu=20");
    let (backend, ms) = spec.split_once('=').ok_or_else(|| bad("no '='".into()))?;
    let backend: BackendId = backend.trim().parse().map_err(|e| bad(format!("{e}")))?;
    let ms: f64 = ms.trim().parse().map_err(|_| bad(format!("'{ms}' is not a number")))?;
    if !(ms >= 0.0 && ms.is_finite()) {
        return Err(bad(format!("'{ms}' is not a duration")));
    }
    Ok(Some((backend, Duration::from_secs_f64(ms / 1000.0))))
}

/// The delay to add to each timed step of a cell on `backend` (`main` has checked the
/// variable, so a malformed one here means none).
pub fn step_delay(backend: BackendId) -> Option<Duration> {
    configured().ok().flatten().filter(|(b, _)| *b == backend).map(|(_, d)| d)
}
