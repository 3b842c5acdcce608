//! The DNS-01 secrets: a DNS provider's API secret (one word on one line), and a TSIG key file
//! as BIND's `tsig-keygen` writes it, which Knot and PowerDNS read too:
//!
//! ```text
//! key "portcullis-acme" {
//!     algorithm hmac-sha256;
//!     secret "base64...";
//! };
//! ```
//!
//! Read by `check` (the file must be private: the key can rewrite the zone's TXT records) and
//! again when ACME starts.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::AcmeProblem;

/// The algorithms RFC 8945 6 requires or recommends; HMAC-MD5 and SHA-1 are not taken.
pub const TSIG_ALGORITHMS: [&str; 3] = ["hmac-sha256", "hmac-sha384", "hmac-sha512"];

/// A shared key for signing DNS updates.
#[derive(Clone, PartialEq, Eq)]
pub struct TsigKey {
    /// The key's name, as the server knows it.
    pub name: String,
    /// One of [`TSIG_ALGORITHMS`].
    pub algorithm: String,
    /// The secret.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Reads and parses the key file, refusing one that others can read.
pub fn read_tsig_key(file: &Path) -> Result<TsigKey, super::ProblemKind> {
    read_secret(file, |text| parse(text).map_err(str::to_owned))
}

/// A DNS provider's API secret: one line, owner-only.
pub fn read_api_secret(file: &Path) -> Result<String, super::ProblemKind> {
    read_secret(file, |text| {
        let secret = text.trim();
        match secret.is_empty() || secret.contains(char::is_whitespace) {
            true => Err("not one word on one line".to_owned()),
            false => Ok(secret.to_owned()),
        }
    })
}

/// `file`'s text, refused when others can read it, as `read` makes it; a failure names the
/// file, never its content.
fn read_secret<T>(
    file: &Path,
    read: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, super::ProblemKind> {
    crate::secrets::require_private(file)?;
    let problem = |why: String| AcmeProblem::DnsSecret {
        file: file.display().to_string(),
        why,
    };
    let text = std::fs::read_to_string(file).map_err(|e| problem(e.to_string()))?;
    Ok(read(&text).map_err(problem)?)
}

fn parse(text: &str) -> Result<TsigKey, &'static str> {
    // Comments aside, the file is words, quoted strings and `{`, `}`, `;`.
    let uncommented: String = text
        .lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .filter(|line| !line.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let spaced = uncommented
        .replace('{', " { ")
        .replace('}', " } ")
        .replace(';', " ; ");
    let words: Vec<&str> = spaced.split_whitespace().collect();
    let after = |word: &str| {
        words
            .iter()
            .position(|w| *w == word)
            .and_then(|i| words.get(i + 1))
            .map(|w| w.trim_matches('"'))
    };
    let name = after("key").ok_or("no `key \"NAME\" { ... };` block")?;
    let algorithm = after("algorithm")
        .ok_or("no algorithm")?
        .to_ascii_lowercase();
    if !TSIG_ALGORITHMS.contains(&algorithm.as_str()) {
        return Err("the algorithm is not hmac-sha256, hmac-sha384 or hmac-sha512");
    }
    let secret = after("secret").ok_or("no secret")?;
    let secret = STANDARD
        .decode(secret)
        .map_err(|_| "the secret is not base64")?;
    if secret.len() < 16 {
        return Err("the secret is shorter than 128 bits");
    }
    Ok(TsigKey {
        name: name.to_owned(),
        algorithm,
        secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_tsig_keygen_writes() {
        let key = parse(
            "key \"portcullis-acme\" {\n\talgorithm hmac-sha256;\n\tsecret \"3q2+7z3q2+7z3q2+7z3q2+7z3q2+7z3q2+7z3q2+7zo=\";\n};\n",
        )
        .unwrap();
        assert_eq!(key.name, "portcullis-acme");
        assert_eq!(key.algorithm, "hmac-sha256");
        assert_eq!(key.secret.len(), 32);
        assert!(!format!("{key:?}").contains("secret: ["));
    }

    #[test]
    fn refuses_weak_or_broken_keys() {
        let md5 = "key \"k\" { algorithm hmac-md5; secret \"3q2+7z3q2+7z3q2+7z3q2+7w==\"; };";
        assert!(parse(md5).is_err());
        let short = "key \"k\" { algorithm hmac-sha256; secret \"3q2+7w==\"; };";
        assert!(parse(short).is_err());
        assert!(parse("key \"k\" { algorithm hmac-sha256; secret \"!!\"; };").is_err());
        assert!(parse("").is_err());
    }
}
