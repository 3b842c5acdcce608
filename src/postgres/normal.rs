//! A statement's shape without its values, as `pg_stat_statements` keeps it: every literal
//! (string, number, dollar-quoted body, bit or byte string) becomes `$n`, comments go, and runs
//! of whitespace become one space. It works on tokens, not on the syntax tree, so a literal in a
//! place the tree prints as it was (`PASSWORD '...'`, `COMMENT ... IS '...'`, a `COPY` file name)
//! is replaced all the same: only words, operators, punctuation and the client's own `$n`
//! placeholders are kept, and any other token is taken for a value.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer};

/// `sql` with every value replaced, or `None` when it cannot be cut into tokens (an
/// unterminated string, say): then nothing of it may be kept.
pub fn normalise(sql: &str) -> Option<String> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
    // The client's placeholders keep their numbers; ours follow them, as in pg_stat_statements.
    let mut next = tokens
        .iter()
        .filter_map(|t| match t {
            Token::Placeholder(p) => p.strip_prefix('$')?.parse::<u32>().ok(),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let mut out = String::with_capacity(sql.len().min(4096));
    let mut space = false;
    for token in &tokens {
        match token {
            Token::Whitespace(_) => {
                space = !out.is_empty();
                continue;
            }
            Token::EOF => continue,
            _ => {}
        }
        if space {
            out.push(' ');
            space = false;
        }
        if kept(token) {
            out.push_str(&token.to_string());
        } else {
            next += 1;
            out.push('$');
            out.push_str(&next.to_string());
        }
    }
    Some(out.trim_end_matches([' ', ';']).to_owned())
}

/// The first 16 hex digits of the SHA-256 of a normalised statement: the same shape has the
/// same digest on every instance, so lines can be grouped without the text.
pub fn digest(normalised: &str) -> String {
    let sum = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, normalised.as_bytes());
    hex::encode(&sum.as_ref()[..8])
}

/// Tokens that carry no value: an allow-list, so a kind of token this code does not know is
/// replaced, never printed.
fn kept(token: &Token) -> bool {
    match token {
        Token::Word(_) | Token::Placeholder(_) => true,
        Token::Number(..)
        | Token::Char(_)
        | Token::CopyData { .. }
        | Token::CustomBinaryOperator(_) => false,
        literal if string(literal) => false,
        // Operators and punctuation print as fixed text.
        other => {
            let text = other.to_string();
            !text.is_empty()
                && text
                    .chars()
                    .all(|c| c.is_ascii_punctuation() && c != '\'' && c != '"' && c != '$')
        }
    }
}

/// A string literal of any quoting.
pub fn string(token: &Token) -> bool {
    matches!(
        token,
        Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_comments_go_and_the_shape_stays() {
        let sql = "UPDATE users  SET email = 'alice@example.com', n = 42 -- who\n\
                   WHERE id = $1 /* canary */ AND note = $tag$secret$tag$;";
        let normal = normalise(sql).unwrap();
        assert_eq!(
            normal,
            "UPDATE users SET email = $2, n = $3 WHERE id = $1 AND note = $4"
        );
        for secret in ["alice", "42", "who", "canary", "secret"] {
            assert!(!normal.contains(secret), "{secret} in {normal}");
        }
        assert_eq!(
            digest(&normal),
            digest(&normalise(&sql.replace("42", "7")).unwrap())
        );
        assert_eq!(digest(&normal).len(), 16);
    }

    #[test]
    fn literals_outside_expressions_are_replaced_too() {
        for (sql, secret) in [
            ("ALTER ROLE app PASSWORD 'hunter2'", "hunter2"),
            ("COMMENT ON TABLE t IS 'private note'", "private"),
            ("COPY t FROM '/home/alice/data.csv'", "alice"),
            ("SELECT E'esc\\'aped', X'ff', B'101', U&'d\\0061t'", "aped"),
            ("INSERT INTO t VALUES (1.5e3, -7)", "1.5"),
        ] {
            let normal = normalise(sql).unwrap();
            assert!(!normal.contains(secret), "{secret} in {normal}");
            assert!(normal.contains("$1"), "{normal}");
        }
    }

    #[test]
    fn an_unterminated_string_keeps_nothing() {
        assert_eq!(normalise("UPDATE t SET a = 'no end"), None);
    }
}
