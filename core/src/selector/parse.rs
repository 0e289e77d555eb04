//! The selector grammar (libcalico-go `lib/selector/parser`, reference 3); `||` binds loosest:
//!
//! ```text
//! selector := <empty> | or
//! or       := and ( "||" and )*
//! and      := op ( "&&" op )*
//! op       := "!"* ( has(LABEL) | all() | LABEL "==" STR | LABEL "!=" STR
//!                  | LABEL ("in"|"not in") "{" [ STR ("," STR)* [","] ] "}" | "(" or ")" )
//! ```
//!
//! Recursion depth is bounded so no input can overflow the stack.

use std::collections::BTreeSet;

use super::lex::{Token, TokenKind};
use super::{Expr, SelectorError};

/// Deepest nesting of parentheses and `!` accepted (far beyond any real selector).
pub const MAX_DEPTH: usize = 100;

#[derive(Debug)]
pub struct Parser<'a> {
    tokens: &'a [Token],
    pos: usize,
    /// Column just past the input, for "unexpected end" errors.
    end_column: usize,
}

impl<'a> Parser<'a> {
    pub fn new(tokens: &'a [Token], end_column: usize) -> Self {
        Parser {
            tokens,
            pos: 0,
            end_column,
        }
    }

    /// Parses the whole token list; an empty list is `all()`.
    pub fn selector(mut self) -> Result<Expr, SelectorError> {
        if self.tokens.is_empty() {
            return Ok(Expr::All);
        }
        let expr = self.or(0)?;
        match self.peek() {
            None => Ok(expr),
            Some(t) => Err(SelectorError::new(
                t.column,
                format!(
                    "unexpected {} after a complete expression",
                    t.kind.describe()
                ),
            )),
        }
    }

    fn peek(&self) -> Option<&'a Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self, wanted: &str) -> Result<&'a Token, SelectorError> {
        let t = self.tokens.get(self.pos).ok_or_else(|| {
            SelectorError::new(self.end_column, format!("expected {wanted}, found the end"))
        })?;
        self.pos += 1;
        Ok(t)
    }

    fn unexpected(t: &Token, wanted: &str) -> SelectorError {
        SelectorError::new(
            t.column,
            format!("expected {wanted}, found {}", t.kind.describe()),
        )
    }

    fn too_deep(&self) -> SelectorError {
        let column = self.peek().map_or(self.end_column, |t| t.column);
        SelectorError::new(column, format!("nested more than {MAX_DEPTH} deep"))
    }

    fn or(&mut self, depth: usize) -> Result<Expr, SelectorError> {
        let mut operands = vec![self.and(depth)?];
        while self.peek().is_some_and(|t| t.kind == TokenKind::Or) {
            self.pos += 1;
            operands.push(self.and(depth)?);
        }
        Ok(if operands.len() == 1 {
            operands.remove(0)
        } else {
            Expr::Or(operands)
        })
    }

    fn and(&mut self, depth: usize) -> Result<Expr, SelectorError> {
        let mut operands = vec![self.op(depth)?];
        while self.peek().is_some_and(|t| t.kind == TokenKind::And) {
            self.pos += 1;
            operands.push(self.op(depth)?);
        }
        Ok(if operands.len() == 1 {
            operands.remove(0)
        } else {
            Expr::And(operands)
        })
    }

    fn op(&mut self, depth: usize) -> Result<Expr, SelectorError> {
        if depth > MAX_DEPTH {
            return Err(self.too_deep());
        }
        let mut negations = 0usize;
        while self.peek().is_some_and(|t| t.kind == TokenKind::Not) {
            self.pos += 1;
            negations += 1;
        }
        let wanted = "has(..), all(), a label or '('";
        let t = self.next(wanted)?;
        let expr = match &t.kind {
            TokenKind::Has(label) => Expr::Has(label.clone()),
            TokenKind::All => Expr::All,
            TokenKind::LParen => {
                let inner = self.or(depth + 1)?;
                let close = self.next("')'")?;
                if close.kind != TokenKind::RParen {
                    return Err(Self::unexpected(close, "')'"));
                }
                inner
            }
            TokenKind::Label(label) => self.comparison(label)?,
            _ => return Err(Self::unexpected(t, wanted)),
        };
        // An even number of '!' cancels out, as in the original.
        Ok(if negations % 2 == 1 {
            Expr::Not(Box::new(expr))
        } else {
            expr
        })
    }

    fn comparison(&mut self, label: &str) -> Result<Expr, SelectorError> {
        let wanted = "'==', '!=', 'in' or 'not in' after the label";
        let op = self.next(wanted)?;
        match op.kind {
            TokenKind::Eq | TokenKind::Ne => {
                let value = self.string()?;
                Ok(if op.kind == TokenKind::Eq {
                    Expr::Eq(label.to_string(), value)
                } else {
                    Expr::Ne(label.to_string(), value)
                })
            }
            TokenKind::In | TokenKind::NotIn => {
                let values = self.set()?;
                Ok(if op.kind == TokenKind::In {
                    Expr::In(label.to_string(), values)
                } else {
                    Expr::NotIn(label.to_string(), values)
                })
            }
            _ => Err(Self::unexpected(op, wanted)),
        }
    }

    fn string(&mut self) -> Result<String, SelectorError> {
        let t = self.next("a quoted string")?;
        match &t.kind {
            TokenKind::Str(s) => Ok(s.clone()),
            _ => Err(Self::unexpected(t, "a quoted string")),
        }
    }

    /// `{ "a", "b", }`: empty sets and a trailing comma are allowed.
    fn set(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        let open = self.next("'{'")?;
        if open.kind != TokenKind::LBrace {
            return Err(Self::unexpected(open, "'{'"));
        }
        let mut values = BTreeSet::new();
        loop {
            let t = self.next("a quoted string or '}'")?;
            match &t.kind {
                TokenKind::RBrace => return Ok(values),
                TokenKind::Str(s) => {
                    values.insert(s.clone());
                }
                _ => return Err(Self::unexpected(t, "a quoted string or '}'")),
            }
            let sep = self.next("',' or '}'")?;
            match sep.kind {
                TokenKind::Comma => {}
                TokenKind::RBrace => return Ok(values),
                _ => return Err(Self::unexpected(sep, "',' or '}'")),
            }
        }
    }
}
