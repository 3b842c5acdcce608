//! What the gateway will not hand to the SQL parser, and how much stack it needs for the rest.
//! sqlparser parses by recursion, and its depth limit does not cover every path: `NOT NOT NOT
//! ...`, `int[][][]...` or a long `1 + 1 + ...` (whose syntax tree is as deep as it is long) run
//! a thread's stack out and abort the process. So the tokens are measured first, in one pass: a
//! statement nested deeper than any hand-written one (or longer than a parse is worth) is
//! `unparsed` (logged by digest, refused on a read-only tunnel, never parsed), and one with a
//! long chain of operators (`a = $1 OR a = $2 OR ...`, as ORMs write) is parsed on a stack grown
//! to its length (stacker, only when the thread's own is short).

use sqlparser::tokenizer::Token;

/// Parentheses, brackets and `CASE`s inside each other.
const MAX_NESTING: usize = 32;
/// Keywords or operators in a row (`NOT NOT`, `- -`, `INTERVAL INTERVAL`), and postfix
/// subscripts or casts in a row (`[1][2]`, `::a::b`).
const MAX_RUN: usize = 32;
/// Binary operators at one level of parentheses: `a = $1 OR a = $2 OR ...` is a tree as deep.
const MAX_CHAIN: usize = 1024;
/// Tokens in all: a statement longer than this is a script or a bulk load, not one to read.
pub const MAX_TOKENS: usize = 20_000;

/// Stack for any parse, and for each operator of the longest chain (a debug build's frames).
const STACK_BASE: usize = 256 << 10;
const STACK_PER_LINK: usize = 16 << 10;

/// The stack a parse of `tokens` needs; `None` when they are not to be parsed.
pub fn stack_needed(tokens: &[Token]) -> Option<usize> {
    let longest = longest_chain(tokens)?;
    Some(STACK_BASE + longest * STACK_PER_LINK)
}

/// The longest chain of binary operators at one level, or `None` past any limit.
fn longest_chain(tokens: &[Token]) -> Option<usize> {
    let mut longest = 0;
    let mut counted = 0usize;
    let mut nesting = 0usize;
    // Binary operators at each open level of parentheses.
    let mut chains: Vec<usize> = vec![0];
    let (mut words, mut operators, mut postfix) = (0usize, 0usize, 0usize);
    for token in tokens {
        match token {
            Token::Whitespace(_) | Token::EOF => continue,
            _ => {}
        }
        counted += 1;
        match token {
            Token::LParen | Token::LBracket => {
                nesting += 1;
                chains.push(0);
            }
            Token::RParen | Token::RBracket => {
                nesting = nesting.saturating_sub(1);
                if chains.len() > 1 {
                    chains.pop();
                }
            }
            Token::Word(word) => match word.value.to_ascii_uppercase().as_str() {
                "CASE" if word.quote_style.is_none() => nesting += 1,
                "END" if word.quote_style.is_none() => nesting = nesting.saturating_sub(1),
                "AND" | "OR" if word.quote_style.is_none() => {
                    if let Some(chain) = chains.last_mut() {
                        *chain += 1;
                    }
                }
                _ => {}
            },
            _ => {}
        }
        let is_keyword = matches!(token, Token::Word(w) if w.quote_style.is_none()
            && w.keyword != sqlparser::keywords::Keyword::NoKeyword);
        words = if is_keyword { words + 1 } else { 0 };
        let is_operator = operator(token);
        operators = if is_operator { operators + 1 } else { 0 };
        if is_operator && let Some(chain) = chains.last_mut() {
            *chain += 1;
        }
        postfix = match token {
            Token::LBracket | Token::DoubleColon => postfix + 1,
            Token::RBracket | Token::Word(_) | Token::Number(..) => postfix,
            _ => 0,
        };
        let chain = chains.last().copied().unwrap_or(0);
        longest = longest.max(chain);
        if counted > MAX_TOKENS
            || nesting > MAX_NESTING
            || words > MAX_RUN
            || operators > MAX_RUN
            || postfix > MAX_RUN
            || chain > MAX_CHAIN
        {
            return None;
        }
    }
    Some(longest)
}

/// Tokens that may be a unary or binary operator.
fn operator(token: &Token) -> bool {
    !matches!(
        token,
        Token::Word(_)
            | Token::Number(..)
            | Token::Placeholder(_)
            | Token::Comma
            | Token::Period
            | Token::SemiColon
            | Token::LParen
            | Token::RParen
            | Token::LBracket
            | Token::RBracket
            | Token::DoubleColon
            | Token::Colon
            | Token::Whitespace(_)
            | Token::EOF
    ) && !super::normal::string(token)
}
