//! Choosing a host for an execution, and the per-host circuit breaker. Plain values and
//! functions: the actors call them, the unit tests pin them.

use std::time::{Duration, Instant};

/// What a HostActor reports about itself when asked for placement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostLoad {
    /// Accepts new executions (breaker not open, not blacklisted).
    pub available: bool,
    /// Executions it is running now.
    pub running: usize,
}

/// The index of the least loaded available host; ties go to the first. `None` when no host
/// is available.
pub fn least_loaded(loads: &[HostLoad]) -> Option<usize> {
    loads
        .iter()
        .enumerate()
        .filter(|(_, load)| load.available)
        .min_by_key(|(_, load)| load.running)
        .map(|(index, _)| index)
}

/// The state of a circuit breaker, as shown by `/status/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half-open",
        }
    }
}

/// Counts consecutive host faults: `max_fails` of them open the circuit; after `reset_timeout`
/// it is half-open and one trial (the HostActor's probe; no execution is placed there) decides
/// whether it closes again.
#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    max_fails: u32,
    reset_timeout: Duration,
    consecutive_fails: u32,
    opened_at: Option<Instant>,
}

impl CircuitBreaker {
    pub fn new(max_fails: u32, reset_timeout: Duration) -> Self {
        CircuitBreaker {
            max_fails: max_fails.max(1),
            reset_timeout,
            consecutive_fails: 0,
            opened_at: None,
        }
    }

    pub fn state(&self, now: Instant) -> CircuitState {
        match self.opened_at {
            None => CircuitState::Closed,
            Some(opened) if now.duration_since(opened) >= self.reset_timeout => {
                CircuitState::HalfOpen
            }
            Some(_) => CircuitState::Open,
        }
    }

    pub fn record_success(&mut self) {
        self.consecutive_fails = 0;
        self.opened_at = None;
    }

    pub fn record_fault(&mut self, now: Instant) {
        self.consecutive_fails = self.consecutive_fails.saturating_add(1);
        let trial_failed = self.state(now) == CircuitState::HalfOpen;
        if trial_failed || self.consecutive_fails >= self.max_fails {
            self.opened_at = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_least_loaded_available_host() {
        let loads = [
            HostLoad {
                available: true,
                running: 3,
            },
            HostLoad {
                available: false,
                running: 0,
            },
            HostLoad {
                available: true,
                running: 1,
            },
            HostLoad {
                available: true,
                running: 1,
            },
        ];
        assert_eq!(least_loaded(&loads), Some(2));
        assert_eq!(
            least_loaded(&[HostLoad {
                available: false,
                running: 0
            }]),
            None
        );
        assert_eq!(least_loaded(&[]), None);
    }

    #[test]
    fn breaker_opens_then_half_opens_then_closes() {
        let start = Instant::now();
        let mut breaker = CircuitBreaker::new(2, Duration::from_secs(10));
        breaker.record_fault(start);
        assert_eq!(breaker.state(start), CircuitState::Closed);
        breaker.record_fault(start);
        assert_eq!(breaker.state(start), CircuitState::Open);
        assert_eq!(
            breaker.state(start + Duration::from_secs(9)),
            CircuitState::Open
        );
        let later = start + Duration::from_secs(10);
        assert_eq!(breaker.state(later), CircuitState::HalfOpen);
        breaker.record_fault(later);
        assert_eq!(breaker.state(later), CircuitState::Open);
        let trial = later + Duration::from_secs(10);
        assert_eq!(breaker.state(trial), CircuitState::HalfOpen);
        breaker.record_success();
        assert_eq!(breaker.state(trial), CircuitState::Closed);
    }
}
