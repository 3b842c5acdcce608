//! `[snapshots] recipients`: who can open an archive. age's own keys, in both kinds age has:
//! X25519 (`age1...`, what every age release and Debian's `age-keygen` make) and the
//! post-quantum hybrid ML-KEM-768 + X25519 (`age1pq1...`, age 1.3's `age-keygen -pq`), which
//! archives kept for years should prefer: whoever stores ciphertext today can wait for the
//! computer that breaks X25519.

use super::ProcessProblem;
use super::problems::{Key, Problems};

/// One recipient of every archive.
// age deprecates X25519 for new keys; operators' offline tools (Debian's age 1.1) know only it.
#[allow(deprecated)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgeRecipient {
    /// Classic X25519.
    X25519(age::x25519::Recipient),
    /// ML-KEM-768 + X25519.
    PostQuantum(age::pq::Recipient),
}

impl AgeRecipient {
    /// As age's encryptor takes it.
    pub fn as_dyn(&self) -> &dyn age::Recipient {
        match self {
            Self::X25519(r) => r,
            Self::PostQuantum(r) => r,
        }
    }

    fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if let Ok(pq) = text.parse() {
            return Some(Self::PostQuantum(pq));
        }
        #[allow(deprecated)]
        text.parse().ok().map(Self::X25519)
    }
}

/// Each recipient, each problem under its index; the two kinds are not mixed (age refuses to:
/// an archive is only as safe as its weakest recipient).
pub(super) fn parse(texts: &[String], problems: &mut Problems) -> Vec<AgeRecipient> {
    let recipients: Vec<AgeRecipient> = texts
        .iter()
        .enumerate()
        .filter_map(|(i, text)| {
            let parsed = AgeRecipient::parse(text);
            if parsed.is_none() {
                let key = Key::new("snapshots.recipients").index(i);
                problems.push(key, ProcessProblem::AgeRecipient(text.clone()));
            }
            parsed
        })
        .collect();
    let post_quantum = |r: &AgeRecipient| matches!(r, AgeRecipient::PostQuantum(_));
    if recipients.iter().any(post_quantum) && !recipients.iter().all(post_quantum) {
        problems.push("snapshots.recipients", ProcessProblem::MixedRecipients);
    }
    recipients
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_kinds_parse_alone_and_never_mixed() {
        #[allow(deprecated)]
        let classic = age::x25519::Identity::generate().to_public().to_string();
        let post_quantum = age::pq::Identity::generate().to_public().to_string();
        let parsed = |texts: &[&str]| {
            let mut problems = Problems::default();
            let texts: Vec<String> = texts.iter().map(|t| (*t).to_owned()).collect();
            let recipients = parse(&texts, &mut problems);
            (recipients.len(), problems.into_warnings().len())
        };
        assert_eq!(parsed(&[&classic]), (1, 0));
        assert_eq!(parsed(&[&post_quantum]), (1, 0));
        assert_eq!(parsed(&[&classic, "age1nope"]), (1, 1));
        assert_eq!(parsed(&[&classic, &post_quantum]), (2, 1));
    }
}
