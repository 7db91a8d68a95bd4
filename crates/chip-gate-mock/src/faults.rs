//! Fault injection: for the API paths (`/api/v1/...`) scripted faults, random rates and latency;
//! for deliveries, the duplicates and reorderings of an at-least-once sender.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One injected misbehaviour, applied to a single API request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Answer with this status (for example 503) and a JSON error body, without running the
    /// operation. JSON: `{"status": 503}`.
    Status(u16),
    /// Answer 429 with `Retry-After: retry_after` (seconds), without running the operation.
    /// JSON: `{"too_many": {"retry_after": 1}}`.
    TooMany {
        /// The `Retry-After` value, in seconds.
        retry_after: u64,
    },
    /// Close the connection without running the operation or sending a response. JSON: `"drop"`.
    Drop,
    /// Run the operation (so a create is stored), then close the connection without sending the
    /// response. JSON: `"drop_after_handling"`.
    DropAfterHandling,
    /// Wait this long, then handle the request normally. JSON: `{"delay": {"secs": 1, "nanos": 0}}`
    /// or, in the `/__mock/faults` body, `{"delay_ms": 1000}`.
    Delay(Duration),
    /// Wait this many milliseconds, then handle the request normally (the JSON-friendly form of
    /// [`Fault::Delay`]). JSON: `{"delay_ms": 250}`.
    DelayMs(u64),
}

/// How the mock misbehaves on API requests. The default injects nothing.
///
/// For each API request the mock first takes the next entry of [`Faults::script`], if any
/// (scripted faults are used one per request, in order, then the rates apply). Otherwise it draws
/// one random number: below `drop_rate` the connection is dropped; below
/// `drop_rate + error_rate` it answers `error_status`; below
/// `drop_rate + error_rate + too_many_rate` it answers 429 with `Retry-After: retry_after_secs`.
/// `latency` is added to every API request. `/__mock/*` paths are never faulted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// The share of API requests answered with `error_status`, from 0.0 to 1.0.
    pub error_rate: f64,
    /// The status used by `error_rate` (default 503).
    pub error_status: u16,
    /// The share of API requests answered with 429.
    pub too_many_rate: f64,
    /// The `Retry-After` seconds sent with a random 429.
    pub retry_after_secs: u64,
    /// The share of API requests whose connection is closed without a response.
    pub drop_rate: f64,
    /// Added to every API request before it is handled.
    #[serde(with = "duration_ms", rename = "latency_ms")]
    pub latency: Duration,
    /// Seed for the random draws; `None` seeds from the system.
    pub seed: Option<u64>,
    /// Faults applied one per API request, in order, before the rates.
    pub script: Vec<Fault>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            error_rate: 0.0,
            error_status: 503,
            too_many_rate: 0.0,
            retry_after_secs: 1,
            drop_rate: 0.0,
            latency: Duration::ZERO,
            seed: None,
            script: Vec::new(),
        }
    }
}

impl Faults {
    /// No faults at all (the same as `Faults::default()`).
    pub fn none() -> Self {
        Self::default()
    }

    /// A deterministic script: the first API request gets `script[0]`, the second `script[1]`, and
    /// so on; after the script every request is handled normally.
    ///
    /// ```
    /// use chip_gate_mock::{Fault, Faults};
    /// let faults = Faults::script(vec![Fault::Status(503), Fault::Drop]);
    /// assert_eq!(faults.script.len(), 2);
    /// ```
    pub fn script(script: Vec<Fault>) -> Self {
        Self {
            script,
            ..Self::default()
        }
    }

    /// Checks the rates are within 0.0..=1.0 and add up to at most 1.0.
    pub fn validate(&self) -> Result<(), String> {
        check_rates(&[
            ("error_rate", self.error_rate),
            ("too_many_rate", self.too_many_rate),
            ("drop_rate", self.drop_rate),
        ])?;
        if self.error_rate + self.too_many_rate + self.drop_rate > 1.0 + 1e-9 {
            return Err("error_rate + too_many_rate + drop_rate must be at most 1.0".into());
        }
        if !(100..=599).contains(&self.error_status) {
            return Err(format!(
                "error_status must be an HTTP status (100-599), got {}",
                self.error_status
            ));
        }
        Ok(())
    }
}

/// How the mock misbehaves when it delivers events, the way an at-least-once sender such as CHIP
/// may. The default injects nothing: every event is delivered until acknowledged, once, in order
/// per object.
///
/// - **Duplicates.** Of the attempts a receiver acknowledges (any `2xx`), a share `duplicate_rate`
///   is treated as if the answer had been lost on the way back (a timeout, a reset connection):
///   the log records the receiver's status with `accepted: false` and an `error` naming the
///   fault, and the delivery is attempted again after the usual backoff, with the same body and
///   signature. The receiver sees the same delivery twice (or more).
/// - **Reordering.** A share `reorder_rate` of triggered events is held back for `hold_back`
///   outside their object's queue before the first attempt, so the object's later events may be
///   delivered first. Held-back events still count as pending (see
///   [`MockServer::wait_idle`](crate::MockServer::wait_idle)).
///
/// JSON (`POST /__mock/delivery_faults`):
/// `{"duplicate_rate": 0.2, "reorder_rate": 0.1, "hold_back_ms": 500, "seed": 7}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeliveryFaults {
    /// The share of acknowledged attempts treated as unacknowledged, so the delivery is made
    /// again (0.0 to 1.0).
    pub duplicate_rate: f64,
    /// The share of events held back before their first attempt (0.0 to 1.0).
    pub reorder_rate: f64,
    /// How long a held-back event waits before its first attempt (default 500 ms).
    #[serde(with = "duration_ms", rename = "hold_back_ms")]
    pub hold_back: Duration,
    /// Seed for the random draws; `None` seeds from the system.
    pub seed: Option<u64>,
}

impl Default for DeliveryFaults {
    fn default() -> Self {
        Self {
            duplicate_rate: 0.0,
            reorder_rate: 0.0,
            hold_back: Duration::from_millis(500),
            seed: None,
        }
    }
}

impl DeliveryFaults {
    /// No delivery faults (the same as `DeliveryFaults::default()`).
    pub fn none() -> Self {
        Self::default()
    }

    /// Checks both rates are within 0.0..=1.0 and the hold-back is at most ten minutes.
    pub fn validate(&self) -> Result<(), String> {
        check_rates(&[
            ("duplicate_rate", self.duplicate_rate),
            ("reorder_rate", self.reorder_rate),
        ])?;
        if self.hold_back > Duration::from_secs(600) {
            return Err("hold_back must be at most 600 seconds".into());
        }
        Ok(())
    }
}

/// The live delivery-fault state: the settings and their random source.
#[derive(Debug)]
pub(crate) struct DeliveryFaultState {
    faults: DeliveryFaults,
    rng: fastrand::Rng,
}

impl DeliveryFaultState {
    pub(crate) fn new(faults: DeliveryFaults) -> Self {
        let rng = match faults.seed {
            Some(seed) => fastrand::Rng::with_seed(seed),
            None => fastrand::Rng::new(),
        };
        Self { faults, rng }
    }

    pub(crate) fn faults(&self) -> DeliveryFaults {
        self.faults.clone()
    }

    /// Whether an acknowledged attempt is to be treated as unacknowledged.
    pub(crate) fn lose_ack(&mut self) -> bool {
        self.faults.duplicate_rate > 0.0 && self.rng.f64() < self.faults.duplicate_rate
    }

    /// How long to hold a new event back, if at all.
    pub(crate) fn hold_back(&mut self) -> Option<Duration> {
        (self.faults.reorder_rate > 0.0 && self.rng.f64() < self.faults.reorder_rate)
            .then_some(self.faults.hold_back)
    }
}

/// Each named rate must be a share, from 0.0 to 1.0 (NaN is not).
fn check_rates(rates: &[(&str, f64)]) -> Result<(), String> {
    match rates.iter().find(|(_, rate)| !(0.0..=1.0).contains(rate)) {
        Some((name, rate)) => Err(format!("{name} must be between 0.0 and 1.0, got {rate}")),
        None => Ok(()),
    }
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// The live state: the configured faults, what is left of the script, and the random source.
#[derive(Debug)]
pub(crate) struct FaultState {
    faults: Faults,
    script: VecDeque<Fault>,
    rng: fastrand::Rng,
}

/// What to do with one API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) latency: Duration,
    pub(crate) fault: Option<Fault>,
}

impl FaultState {
    pub(crate) fn new(faults: Faults) -> Self {
        let rng = match faults.seed {
            Some(seed) => fastrand::Rng::with_seed(seed),
            None => fastrand::Rng::new(),
        };
        Self {
            script: faults.script.iter().cloned().collect(),
            faults,
            rng,
        }
    }

    pub(crate) fn faults(&self) -> Faults {
        let mut f = self.faults.clone();
        f.script = self.script.iter().cloned().collect();
        f
    }

    pub(crate) fn next(&mut self) -> Decision {
        let latency = self.faults.latency;
        if let Some(fault) = self.script.pop_front() {
            return Decision {
                latency,
                fault: Some(fault),
            };
        }
        let f = &self.faults;
        let total = f.drop_rate + f.error_rate + f.too_many_rate;
        let fault = if total <= 0.0 {
            None
        } else {
            let x = self.rng.f64();
            if x < f.drop_rate {
                Some(Fault::Drop)
            } else if x < f.drop_rate + f.error_rate {
                Some(Fault::Status(f.error_status))
            } else if x < total {
                Some(Fault::TooMany {
                    retry_after: f.retry_after_secs,
                })
            } else {
                None
            }
        };
        Decision { latency, fault }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn script_then_normal() {
        let mut st = FaultState::new(Faults::script(vec![Fault::Status(503), Fault::Drop]));
        assert_eq!(st.next().fault, Some(Fault::Status(503)));
        assert_eq!(st.next().fault, Some(Fault::Drop));
        for _ in 0..100 {
            assert_eq!(st.next().fault, None);
        }
    }

    #[test]
    fn seeded_rates_are_reproducible_and_roughly_right() {
        let faults = Faults {
            error_rate: 0.3,
            too_many_rate: 0.2,
            seed: Some(7),
            ..Faults::default()
        };
        let draw = |faults: &Faults| {
            let mut st = FaultState::new(faults.clone());
            (0..2000).map(|_| st.next().fault).collect::<Vec<_>>()
        };
        let a = draw(&faults);
        assert_eq!(a, draw(&faults));
        let errors = a.iter().filter(|f| **f == Some(Fault::Status(503))).count();
        let too_many = a
            .iter()
            .filter(|f| matches!(f, Some(Fault::TooMany { retry_after: 1 })))
            .count();
        assert!((500..700).contains(&errors), "{errors}");
        assert!((300..500).contains(&too_many), "{too_many}");
        assert!(!a.contains(&Some(Fault::Drop)));
    }

    #[test]
    fn delivery_faults_draws_and_json() {
        let none = DeliveryFaults::none();
        let mut st = DeliveryFaultState::new(none.clone());
        assert!((0..1000).all(|_| !st.lose_ack() && st.hold_back().is_none()));
        let some: DeliveryFaults = serde_json::from_str(
            r#"{"duplicate_rate":0.25,"reorder_rate":0.1,"hold_back_ms":40,"seed":3}"#,
        )
        .unwrap();
        assert_eq!(some.hold_back, Duration::from_millis(40));
        assert!(some.validate().is_ok());
        let draw = |faults: &DeliveryFaults| {
            let mut st = DeliveryFaultState::new(faults.clone());
            (0..2000)
                .map(|_| (st.lose_ack(), st.hold_back()))
                .collect::<Vec<_>>()
        };
        let a = draw(&some);
        assert_eq!(a, draw(&some), "a seed makes the draws reproducible");
        let lost = a.iter().filter(|d| d.0).count();
        let held = a.iter().filter(|d| d.1.is_some()).count();
        assert!((400..600).contains(&lost), "{lost}");
        assert!((120..280).contains(&held), "{held}");
        assert!(
            a.iter()
                .all(|d| d.1.is_none_or(|h| h == Duration::from_millis(40)))
        );
        for bad in [
            DeliveryFaults {
                duplicate_rate: 1.5,
                ..DeliveryFaults::default()
            },
            DeliveryFaults {
                reorder_rate: -0.1,
                ..DeliveryFaults::default()
            },
            DeliveryFaults {
                hold_back: Duration::from_secs(601),
                ..DeliveryFaults::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert_eq!(
            serde_json::to_value(DeliveryFaults::default()).unwrap(),
            serde_json::json!({"duplicate_rate": 0.0, "reorder_rate": 0.0, "hold_back_ms": 500, "seed": null})
        );
    }

    #[test]
    fn json_forms() {
        let f: Faults = serde_json::from_str(
            r#"{"error_rate":0.5,"latency_ms":20,"script":[{"status":500},{"too_many":{"retry_after":2}},"drop","drop_after_handling",{"delay_ms":5}]}"#,
        )
        .unwrap();
        assert_eq!(f.latency, Duration::from_millis(20));
        assert_eq!(f.error_status, 503);
        assert_eq!(
            f.script,
            vec![
                Fault::Status(500),
                Fault::TooMany { retry_after: 2 },
                Fault::Drop,
                Fault::DropAfterHandling,
                Fault::DelayMs(5)
            ]
        );
        assert!(f.validate().is_ok());
        assert!(
            Faults {
                error_rate: 0.8,
                drop_rate: 0.8,
                ..Faults::default()
            }
            .validate()
            .is_err()
        );
    }
}
