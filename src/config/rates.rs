//! Rate limits, validated: a count per second, minute or hour and a burst, as GCRA counts them
//! (one more allowed every `per / count`, at most `burst` at once).

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use super::ProblemKind;
use super::problems::{Key, Problems};
use super::raw::RawRate;

/// The largest count or burst: far past any client that means well.
const MAX_COUNT: u32 = 1_000_000;

/// What stands in for a rate refused with a problem, so that validation can go on: the
/// config is refused all the same.
pub(super) const FALLBACK_RATE: Rate = Rate {
    count: NonZeroU32::MIN,
    per: Duration::from_secs(1),
    burst: NonZeroU32::MIN,
};

/// A validated rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    /// How many...
    pub count: NonZeroU32,
    /// ... per this long.
    pub per: Duration,
    /// How many may come at once.
    pub burst: NonZeroU32,
}

impl Rate {
    /// The time in which one more is allowed.
    pub fn period(&self) -> Duration {
        self.per / self.count.get()
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}, burst {}", self.count, self.burst)
    }
}

/// `raw` as a rate; `None`, and a problem under `key`, when it is not one.
pub(super) fn rate(raw: &RawRate, key: &Key, problems: &mut Problems) -> Option<Rate> {
    let parsed = raw.rate.split_once('/').and_then(|(count, unit)| {
        let count = count
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|c| *c <= MAX_COUNT)?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return None,
        };
        Some((NonZeroU32::new(count)?, per))
    });
    if parsed.is_none() {
        problems.push(key.field("rate"), ProblemKind::Rate(raw.rate.clone()));
    }
    let burst = match raw.burst {
        Some(burst) if burst == 0 || burst > MAX_COUNT => {
            problems.push(key.field("burst"), ProblemKind::Burst(MAX_COUNT));
            None
        }
        Some(burst) => NonZeroU32::new(burst),
        None => parsed.map(|(count, _)| count),
    };
    let (count, per) = parsed?;
    Some(Rate {
        count,
        per,
        burst: burst?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(rate: &str, burst: Option<u32>) -> Option<Rate> {
        let raw = RawRate {
            rate: rate.to_owned(),
            burst,
        };
        rate_of(&raw)
    }

    fn rate_of(raw: &RawRate) -> Option<Rate> {
        let mut problems = Problems::default();
        let parsed = rate(raw, &Key::new("limit"), &mut problems);
        assert_eq!(parsed.is_some(), problems.is_empty());
        parsed
    }

    #[test]
    fn rates_are_read_with_their_unit_and_burst() {
        let rate = parse("20/s", Some(40)).unwrap();
        assert_eq!(rate.period(), Duration::from_millis(50));
        assert_eq!(rate.burst.get(), 40);
        assert_eq!(
            parse("6/m", None).unwrap().period(),
            Duration::from_secs(10)
        );
        assert_eq!(parse("6/m", None).unwrap().burst.get(), 6);
        assert_eq!(parse("1/h", None).unwrap().to_string(), "1/h, burst 1");
        for (bad, burst) in [
            ("0/s", None),
            ("20", None),
            ("20/d", None),
            ("-1/s", None),
            ("2000000/s", None),
            ("20/s", Some(0)),
        ] {
            assert_eq!(parse(bad, burst), None, "{bad} {burst:?}");
        }
    }
}
