//! The selector tokenizer (libcalico-go `lib/selector/tokenizer`, reference 3).
//!
//! Only space and tab separate tokens. Words are tried in the original's order: `has(LABEL)`,
//! `not in`, `in`, `all()`, then a bare label, so `in-x` reads as the `in` operator followed by
//! `-x` and a bare `all` is a label, as in the original.

use super::SelectorError;

/// Longest label the 2.3+ grammar accepts (`[a-zA-Z0-9_./-]{1,512}`).
pub const MAX_LABEL_LEN: usize = 512;

/// One token with the 1-based character column it starts at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub column: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    LParen,
    RParen,
    LBrace,
    RBrace,
    Comma,
    Eq,
    Ne,
    And,
    Or,
    Not,
    In,
    NotIn,
    All,
    Has(String),
    Str(String),
    Label(String),
}

impl TokenKind {
    /// How the token reads in an error message.
    pub fn describe(&self) -> String {
        match self {
            TokenKind::LParen => "'('".into(),
            TokenKind::RParen => "')'".into(),
            TokenKind::LBrace => "'{'".into(),
            TokenKind::RBrace => "'}'".into(),
            TokenKind::Comma => "','".into(),
            TokenKind::Eq => "'=='".into(),
            TokenKind::Ne => "'!='".into(),
            TokenKind::And => "'&&'".into(),
            TokenKind::Or => "'||'".into(),
            TokenKind::Not => "'!'".into(),
            TokenKind::In => "'in'".into(),
            TokenKind::NotIn => "'not in'".into(),
            TokenKind::All => "'all()'".into(),
            TokenKind::Has(l) => format!("'has({l})'"),
            TokenKind::Str(s) => format!("string {s:?}"),
            TokenKind::Label(l) => format!("label {l:?}"),
        }
    }
}

pub fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Go's regexp `\s`.
fn is_regex_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0c' | '\r')
}

/// Splits `input` into tokens.
///
/// # Errors
/// The first character that starts no token, an unterminated string, or an over-long label,
/// with its column.
pub fn tokenize(input: &str) -> Result<Vec<Token>, SelectorError> {
    let chars: Vec<char> = input.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        if c == ' ' || c == '\t' {
            i += 1;
            continue;
        }
        let next = chars.get(i + 1).copied();
        let (kind, len) = match (c, next) {
            ('(', _) => (TokenKind::LParen, 1),
            (')', _) => (TokenKind::RParen, 1),
            ('{', _) => (TokenKind::LBrace, 1),
            ('}', _) => (TokenKind::RBrace, 1),
            (',', _) => (TokenKind::Comma, 1),
            ('=', Some('=')) => (TokenKind::Eq, 2),
            ('!', Some('=')) => (TokenKind::Ne, 2),
            ('&', Some('&')) => (TokenKind::And, 2),
            ('|', Some('|')) => (TokenKind::Or, 2),
            ('!', _) => (TokenKind::Not, 1),
            ('"' | '\'', _) => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&q| q == c)
                    .ok_or_else(|| SelectorError::new(column, "unterminated string"))?;
                let text: String = chars[i + 1..i + 1 + end].iter().collect();
                (TokenKind::Str(text), end + 2)
            }
            _ => word(&chars[i..], column)?,
        };
        out.push(Token { kind, column });
        i += len;
    }
    Ok(out)
}

/// Matches `literal` at the start of `s`.
fn starts_with(s: &[char], literal: &str) -> bool {
    let mut n = 0;
    for (i, l) in literal.chars().enumerate() {
        if s.get(i) != Some(&l) {
            return false;
        }
        n += 1;
    }
    n == literal.chars().count()
}

fn skip_spaces(s: &[char], mut i: usize) -> usize {
    while s.get(i).copied().is_some_and(is_regex_space) {
        i += 1;
    }
    i
}

fn label_len(s: &[char], from: usize) -> usize {
    s[from..].iter().take_while(|c| is_label_char(**c)).count()
}

fn word(s: &[char], column: usize) -> Result<(TokenKind, usize), SelectorError> {
    let boundary = |i: usize| !s.get(i).copied().is_some_and(is_word_char);
    if starts_with(s, "has(") {
        let start = skip_spaces(s, 4);
        let len = label_len(s, start);
        let end = skip_spaces(s, start + len);
        if len > 0 && s.get(end) == Some(&')') {
            let label = checked_label(&s[start..start + len], column + start)?;
            return Ok((TokenKind::Has(label), end + 1));
        }
    }
    if starts_with(s, "not") {
        let i = skip_spaces(s, 3);
        if starts_with(&s[i..], "in") && boundary(i + 2) {
            return Ok((TokenKind::NotIn, i + 2));
        }
    }
    if starts_with(s, "in") && boundary(2) {
        return Ok((TokenKind::In, 2));
    }
    if starts_with(s, "all(") {
        let end = skip_spaces(s, 4);
        if s.get(end) == Some(&')') {
            return Ok((TokenKind::All, end + 1));
        }
    }
    let len = label_len(s, 0);
    if len == 0 {
        let what = match s[0] {
            '=' => "a lone '=' (did you mean '=='?)".to_string(),
            '&' => "a lone '&' (did you mean '&&'?)".to_string(),
            '|' => "a lone '|' (did you mean '||'?)".to_string(),
            '\n' | '\r' => "a line break".to_string(),
            c => format!("unexpected character {c:?}"),
        };
        return Err(SelectorError::new(column, what));
    }
    Ok((TokenKind::Label(checked_label(&s[..len], column)?), len))
}

fn checked_label(chars: &[char], column: usize) -> Result<String, SelectorError> {
    if chars.len() > MAX_LABEL_LEN {
        return Err(SelectorError::new(
            column,
            format!("label is longer than {MAX_LABEL_LEN} characters"),
        ));
    }
    Ok(chars.iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(s: &str) -> Vec<TokenKind> {
        tokenize(s).unwrap().into_iter().map(|t| t.kind).collect()
    }

    #[test]
    fn words_follow_the_originals_order() {
        assert_eq!(
            kinds("has( a/b ) && x notin {'1'}"),
            vec![
                TokenKind::Has("a/b".into()),
                TokenKind::And,
                TokenKind::Label("x".into()),
                TokenKind::NotIn,
                TokenKind::LBrace,
                TokenKind::Str("1".into()),
                TokenKind::RBrace,
            ]
        );
        assert_eq!(kinds("in-x")[0], TokenKind::In);
        assert_eq!(kinds("all")[0], TokenKind::Label("all".into()));
        assert_eq!(kinds("inx")[0], TokenKind::Label("inx".into()));
        assert_eq!(kinds("!=")[0], TokenKind::Ne);
    }

    #[test]
    fn errors_point_at_the_column() {
        assert_eq!(tokenize("a = 'b'").unwrap_err().column, 3);
        assert_eq!(tokenize("a == 'b").unwrap_err().column, 6);
        assert_eq!(tokenize("a == 'b'\n").unwrap_err().column, 9);
    }
}
