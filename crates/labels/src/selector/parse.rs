//! Lexer and recursive-descent parser for the selector text form.
//!
//! ```text
//! selector    := ε | requirement (',' requirement)*
//! requirement := '!' key
//!              | key                                  (exists)
//!              | key ('=' | '==' | '!=') value?       (empty value allowed)
//!              | key ('in' | 'notin') '(' value? (',' value?)* ')'
//!              | key ('>' | '<') integer
//! ```
//! A word is a run of characters other than whitespace and `!=,()<>`; keys
//! and values are words checked against the Kubernetes grammar.

use std::collections::BTreeSet;

use super::{Op, Requirement, Selector};
use crate::error::{Expected, Found, LabelError, Result};
use crate::name::validate_value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok<'a> {
    Word(&'a str),
    Bang,
    Eq,
    NotEq,
    Gt,
    Lt,
    Open,
    Close,
    Comma,
    End,
}

impl Tok<'_> {
    fn found(self) -> Found {
        match self {
            Tok::Word(w) => Found::Word(w.to_owned()),
            Tok::Bang => Found::Bang,
            Tok::Eq => Found::Equals,
            Tok::NotEq => Found::NotEquals,
            Tok::Gt => Found::GreaterThan,
            Tok::Lt => Found::LessThan,
            Tok::Open => Found::OpenParen,
            Tok::Close => Found::CloseParen,
            Tok::Comma => Found::Comma,
            Tok::End => Found::End,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Lexer<'a> {
    text: &'a str,
    pos: usize,
}

fn is_special(c: char) -> bool {
    matches!(c, '!' | '=' | ',' | '(' | ')' | '<' | '>') || c.is_whitespace()
}

impl<'a> Lexer<'a> {
    /// The next token and its byte offset.
    fn next(&mut self) -> (usize, Tok<'a>) {
        let rest = &self.text[self.pos..];
        let trimmed = rest.trim_start();
        self.pos += rest.len() - trimmed.len();
        let start = self.pos;
        let mut chars = trimmed.chars();
        let Some(c) = chars.next() else {
            return (start, Tok::End);
        };
        let next = chars.next();
        let (len, tok) = match (c, next) {
            ('!', Some('=')) => (2, Tok::NotEq),
            ('!', _) => (1, Tok::Bang),
            ('=', Some('=')) => (2, Tok::Eq),
            ('=', _) => (1, Tok::Eq),
            (',', _) => (1, Tok::Comma),
            ('>', _) => (1, Tok::Gt),
            ('<', _) => (1, Tok::Lt),
            ('(', _) => (1, Tok::Open),
            (')', _) => (1, Tok::Close),
            _ => {
                let len = trimmed.find(is_special).unwrap_or(trimmed.len());
                (len, Tok::Word(&trimmed[..len]))
            }
        };
        self.pos += len;
        (start, tok)
    }

    fn peek(&self) -> (usize, Tok<'a>) {
        let mut ahead = *self;
        ahead.next()
    }
}

fn syntax(position: usize, expected: Expected, found: Tok<'_>) -> LabelError {
    LabelError::Syntax {
        position,
        expected,
        found: found.found(),
    }
}

pub(super) fn parse(text: &str) -> Result<Selector> {
    let mut lx = Lexer { text, pos: 0 };
    if lx.peek().1 == Tok::End {
        return Ok(Selector::everything());
    }
    let mut requirements = Vec::new();
    loop {
        requirements.push(requirement(&mut lx)?);
        match lx.next() {
            (_, Tok::Comma) => continue,
            (_, Tok::End) => break,
            (pos, tok) => return Err(syntax(pos, Expected::CommaOrEnd, tok)),
        }
    }
    Ok(Selector::from_requirements(requirements))
}

fn requirement(lx: &mut Lexer<'_>) -> Result<Requirement> {
    match lx.next() {
        (_, Tok::Bang) => match lx.next() {
            (pos, Tok::Word(key)) => {
                Requirement::checked(key.to_owned(), Op::DoesNotExist, Some(pos))
            }
            (pos, tok) => Err(syntax(pos, Expected::Key, tok)),
        },
        (key_pos, Tok::Word(key)) => {
            let key = key.to_owned();
            let op = match lx.peek() {
                (_, Tok::Comma | Tok::End) => Op::Exists,
                (_, Tok::Eq) => {
                    lx.next();
                    Op::Equals(value(lx, &key)?)
                }
                (_, Tok::NotEq) => {
                    lx.next();
                    Op::NotEquals(value(lx, &key)?)
                }
                (_, Tok::Gt) => {
                    lx.next();
                    Op::GreaterThan(integer(lx, &key)?)
                }
                (_, Tok::Lt) => {
                    lx.next();
                    Op::LessThan(integer(lx, &key)?)
                }
                (_, Tok::Word("in")) => {
                    lx.next();
                    Op::In(values(lx, &key)?)
                }
                (_, Tok::Word("notin")) => {
                    lx.next();
                    Op::NotIn(values(lx, &key)?)
                }
                (pos, tok) => return Err(syntax(pos, Expected::Operator, tok)),
            };
            Requirement::checked(key, op, Some(key_pos))
        }
        (pos, tok) => Err(syntax(pos, Expected::Key, tok)),
    }
}

fn checked_value(key: &str, value: &str, position: usize) -> Result<String> {
    validate_value(value).map_err(|reason| LabelError::InvalidValue {
        key: key.to_owned(),
        value: value.to_owned(),
        position: Some(position),
        reason,
    })?;
    Ok(value.to_owned())
}

/// After `=`/`!=`: a word, or nothing (the empty value) before `,` or the end.
fn value(lx: &mut Lexer<'_>, key: &str) -> Result<String> {
    match lx.peek() {
        (pos, Tok::Word(v)) => {
            lx.next();
            checked_value(key, v, pos)
        }
        (_, Tok::Comma | Tok::End) => Ok(String::new()),
        (pos, tok) => Err(syntax(pos, Expected::Value, tok)),
    }
}

/// After `>`/`<`: a word that parses as an `i64`.
fn integer(lx: &mut Lexer<'_>, key: &str) -> Result<i64> {
    match lx.next() {
        (pos, Tok::Word(v)) => super::parse_int(v).ok_or_else(|| LabelError::NotAnInteger {
            key: key.to_owned(),
            value: v.to_owned(),
            position: Some(pos),
        }),
        (pos, tok) => Err(syntax(pos, Expected::Integer, tok)),
    }
}

/// After `in`/`notin`: `(` then possibly-empty values separated by `,`, then `)`.
fn values(lx: &mut Lexer<'_>, key: &str) -> Result<BTreeSet<String>> {
    match lx.next() {
        (_, Tok::Open) => {}
        (pos, tok) => return Err(syntax(pos, Expected::OpenParen, tok)),
    }
    let mut set = BTreeSet::new();
    loop {
        let v = match lx.peek() {
            (pos, Tok::Word(v)) => {
                lx.next();
                checked_value(key, v, pos)?
            }
            _ => String::new(),
        };
        set.insert(v);
        match lx.next() {
            (_, Tok::Comma) => continue,
            (_, Tok::Close) => return Ok(set),
            (pos, tok) => return Err(syntax(pos, Expected::CommaOrCloseParen, tok)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::NameError;

    fn syntax_err(text: &str) -> (usize, Expected, Found) {
        match parse(text) {
            Err(LabelError::Syntax {
                position,
                expected,
                found,
            }) => (position, expected, found),
            other => panic!("{text:?}: expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn syntax_errors_name_position_and_expectation() {
        let w = |s: &str| Found::Word(s.to_owned());
        let cases = [
            (",", (0, Expected::Key, Found::Comma)),
            ("a,", (2, Expected::Key, Found::End)),
            ("a,,b", (2, Expected::Key, Found::Comma)),
            ("!", (1, Expected::Key, Found::End)),
            ("!=a", (0, Expected::Key, Found::NotEquals)),
            ("!!a", (1, Expected::Key, Found::Bang)),
            ("a b", (2, Expected::Operator, w("b"))),
            ("a (", (2, Expected::Operator, Found::OpenParen)),
            ("a=(", (2, Expected::Value, Found::OpenParen)),
            ("a = b c", (6, Expected::CommaOrEnd, w("c"))),
            ("!a=b", (2, Expected::CommaOrEnd, Found::Equals)),
            ("a in", (4, Expected::OpenParen, Found::End)),
            ("a in b", (5, Expected::OpenParen, w("b"))),
            ("a in (b", (7, Expected::CommaOrCloseParen, Found::End)),
            ("a in (b c)", (8, Expected::CommaOrCloseParen, w("c"))),
            (
                "a notin (b))",
                (11, Expected::CommaOrEnd, Found::CloseParen),
            ),
            (
                "a in ((b)",
                (6, Expected::CommaOrCloseParen, Found::OpenParen),
            ),
            (")", (0, Expected::Key, Found::CloseParen)),
            ("a>", (2, Expected::Integer, Found::End)),
            ("a>=5", (2, Expected::Integer, Found::Equals)),
            ("a<,b", (2, Expected::Integer, Found::Comma)),
            ("a>5>6", (3, Expected::CommaOrEnd, Found::GreaterThan)),
            ("<5", (0, Expected::Key, Found::LessThan)),
        ];
        for (text, want) in cases {
            assert_eq!(syntax_err(text), want, "{text:?}");
        }
    }

    #[test]
    fn invalid_keys_and_values_carry_positions() {
        match parse("a=1, b@d=2") {
            Err(LabelError::InvalidKey {
                key,
                position,
                reason,
            }) => {
                assert_eq!(key, "b@d");
                assert_eq!(position, Some(5));
                assert_eq!(reason, NameError::BadChar { ch: '@', index: 1 });
            }
            other => panic!("{other:?}"),
        }
        match parse("zone in (a, -b)") {
            Err(LabelError::InvalidValue {
                key,
                value,
                position,
                reason,
            }) => {
                assert_eq!((key.as_str(), value.as_str()), ("zone", "-b"));
                assert_eq!(position, Some(12));
                assert_eq!(reason, NameError::BadEdge { ch: '-', index: 0 });
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse("!a/b/c"),
            Err(LabelError::InvalidKey {
                position: Some(1),
                reason: NameError::TooManySlashes,
                ..
            })
        ));
        assert!(matches!(
            parse(&format!("k={}", "v".repeat(64))),
            Err(LabelError::InvalidValue {
                position: Some(2),
                reason: NameError::TooLong { len: 64, max: 63 },
                ..
            })
        ));
    }

    #[test]
    fn comparisons_need_integers() {
        for (text, value, position) in [
            ("a>b", "b", 2),
            ("a < 1.5", "1.5", 4),
            ("a>99999999999999999999", "99999999999999999999", 2),
        ] {
            match parse(text) {
                Err(LabelError::NotAnInteger {
                    key,
                    value: v,
                    position: p,
                }) => {
                    assert_eq!(
                        (key.as_str(), v.as_str(), p),
                        ("a", value, Some(position)),
                        "{text:?}"
                    );
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn error_messages_read_well() {
        let err = parse("zone in a").unwrap_err();
        assert_eq!(
            err.to_string(),
            "selector syntax error at byte 8: expected '(', found \"a\""
        );
        let err = parse("zone=a b").unwrap_err();
        assert_eq!(
            err.to_string(),
            "selector syntax error at byte 7: expected ',' or the end, found \"b\""
        );
    }

    #[test]
    fn whitespace_and_unicode_do_not_confuse_positions() {
        assert_eq!(
            parse("\t zone \n= a ,tier!=b").unwrap().to_string(),
            "tier!=b,zone=a"
        );
        let (pos, expected, _) = syntax_err("é é");
        assert_eq!((pos, expected), (3, Expected::Operator));
    }
}
