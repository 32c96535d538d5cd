//! Tokenizer for the expression language.

use crate::value::parse_number;
use crate::ParseError;

/// Longest expression GitHub accepts, in UTF-16 code units.
pub const MAX_EXPRESSION_LENGTH: usize = 21_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tk {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    Bang,
    Ne,
    EqEq,
    Gt,
    Ge,
    Lt,
    Le,
    And,
    Or,
    Star,
    Number,
    Str,
    Ident,
    True,
    False,
    Null,
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub kind: Tk,
    /// Source text of the token.
    pub lexeme: String,
    /// Value of a `Number` token.
    pub num: f64,
    /// Unescaped value of a `Str` token.
    pub text: String,
    /// 1-based position (UTF-16 code units) of the token's first character.
    pub pos: usize,
}

impl Token {
    /// How GitHub shows a token in an error message: as written (strings with their quotes).
    pub fn display(&self) -> &str {
        &self.lexeme
    }
}

fn is_boundary(c: char) -> bool {
    matches!(
        c,
        '(' | '[' | ')' | ']' | ',' | '.' | '!' | '>' | '<' | '=' | '&' | '|'
    ) || c.is_whitespace()
}

fn is_legal_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

struct Lexer<'a> {
    src: &'a str,
    chars: Vec<char>,
    /// UTF-16 offset of each char (plus one past the end).
    units: Vec<usize>,
    start: usize,
    offset: usize,
    tokens: Vec<Token>,
}

pub(crate) fn lex(src: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = src.chars().collect();
    let mut units = Vec::with_capacity(chars.len() + 1);
    let mut u = 0;
    for c in &chars {
        units.push(u);
        u += c.len_utf16();
    }
    units.push(u);
    if u > MAX_EXPRESSION_LENGTH {
        return Err(ParseError::ExceededMaxLength {
            max: MAX_EXPRESSION_LENGTH,
        });
    }
    let mut lx = Lexer {
        src,
        chars,
        units,
        start: 0,
        offset: 0,
        tokens: Vec::new(),
    };
    lx.run()?;
    Ok(lx.tokens)
}

impl Lexer<'_> {
    fn run(&mut self) -> Result<(), ParseError> {
        while self.offset < self.chars.len() {
            self.start = self.offset;
            let c = self.chars[self.offset];
            self.offset += 1;
            match c {
                '(' => self.add(Tk::LParen),
                ')' => self.add(Tk::RParen),
                '[' => self.add(Tk::LBracket),
                ']' => self.add(Tk::RBracket),
                ',' => self.add(Tk::Comma),
                '.' => {
                    if matches!(
                        self.previous(),
                        Some(Tk::Ident | Tk::RBracket | Tk::RParen | Tk::Star)
                    ) {
                        self.add(Tk::Dot);
                    } else {
                        self.number()?;
                    }
                }
                '-' | '+' => self.number()?,
                '!' => {
                    let k = if self.eat('=') { Tk::Ne } else { Tk::Bang };
                    self.add(k);
                }
                '=' => {
                    if self.eat('=') {
                        self.add(Tk::EqEq);
                    } else {
                        self.identifier()?;
                    }
                }
                '<' => {
                    let k = if self.eat('=') { Tk::Le } else { Tk::Lt };
                    self.add(k);
                }
                '>' => {
                    let k = if self.eat('=') { Tk::Ge } else { Tk::Gt };
                    self.add(k);
                }
                '&' => {
                    if self.eat('&') {
                        self.add(Tk::And);
                    } else {
                        self.identifier()?;
                    }
                }
                '|' => {
                    if self.eat('|') {
                        self.add(Tk::Or);
                    } else {
                        self.identifier()?;
                    }
                }
                '*' => self.add(Tk::Star),
                '\'' => self.string()?,
                c if c.is_whitespace() => {}
                c if c.is_ascii_digit() => self.number()?,
                _ => self.identifier()?,
            }
        }
        Ok(())
    }

    fn previous(&self) -> Option<Tk> {
        self.tokens.last().map(|t| t.kind)
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.offset).copied()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.offset += 1;
            true
        } else {
            false
        }
    }

    fn lexeme(&self) -> String {
        self.chars[self.start..self.offset].iter().collect()
    }

    fn pos(&self) -> usize {
        self.units[self.start] + 1
    }

    fn add(&mut self, kind: Tk) {
        self.push(kind, 0.0, String::new());
    }

    fn push(&mut self, kind: Tk, num: f64, text: String) {
        let lexeme = self.lexeme();
        let pos = self.pos();
        self.tokens.push(Token {
            kind,
            lexeme,
            num,
            text,
            pos,
        });
    }

    fn unexpected(&self, token: String) -> ParseError {
        ParseError::UnexpectedSymbol {
            token,
            position: self.pos(),
            expression: self.src.to_string(),
            lexical: true,
        }
    }

    fn number(&mut self) -> Result<(), ParseError> {
        while let Some(c) = self.peek() {
            if is_boundary(c) && c != '.' {
                break;
            }
            self.offset += 1;
        }
        let lexeme = self.lexeme();
        let value = parse_number(&lexeme);
        if value.is_nan() {
            return Err(self.unexpected(lexeme));
        }
        self.push(Tk::Number, value, String::new());
        Ok(())
    }

    fn string(&mut self) -> Result<(), ParseError> {
        loop {
            match self.peek() {
                None => {
                    let rest: String = self.chars[self.start..].iter().collect();
                    return Err(self.unexpected(rest));
                }
                Some('\'') => {
                    if self.chars.get(self.offset + 1) == Some(&'\'') {
                        self.offset += 2;
                    } else {
                        break;
                    }
                }
                Some(_) => self.offset += 1,
            }
        }
        // Closing quote.
        self.offset += 1;
        let inner: String = self.chars[self.start + 1..self.offset - 1].iter().collect();
        self.push(Tk::Str, 0.0, inner.replace("''", "'"));
        Ok(())
    }

    fn identifier(&mut self) -> Result<(), ParseError> {
        while let Some(c) = self.peek() {
            if is_boundary(c) {
                break;
            }
            self.offset += 1;
        }
        let lexeme = self.lexeme();
        let mut kind = Tk::Ident;
        let mut num = 0.0;
        if self.previous() != Some(Tk::Dot) {
            match lexeme.as_str() {
                "true" => kind = Tk::True,
                "false" => kind = Tk::False,
                "null" => kind = Tk::Null,
                "NaN" => {
                    kind = Tk::Number;
                    num = f64::NAN;
                }
                "Infinity" => {
                    kind = Tk::Number;
                    num = f64::INFINITY;
                }
                _ => {}
            }
        }
        if !is_legal_identifier(&lexeme) {
            return Err(self.unexpected(lexeme));
        }
        self.push(kind, num, String::new());
        Ok(())
    }
}
