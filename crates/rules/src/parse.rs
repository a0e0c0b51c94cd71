//! The text form of a rule: a hand-written lexer and recursive-descent parser.
//!
//! ```text
//! count(Order Completed in 90d) >= 2
//! Page Viewed where path = "/pricing" in 7d and not trait.city = "Ankara"
//! ```
//!
//! Errors name the line and column (1-based, columns counted in characters), what was
//! expected there and what was found. The parser never panics and never recurses without
//! bound: texts over [`MAX_LEN`] bytes and nesting deeper than [`MAX_DEPTH`] are errors.

use crate::ast::{
    Agg, Aggregate, Cmp, Dur, Events, Literal, Match, PropTest, Rule, Seen, Sequence, Test,
    TimeTest, TraitTest,
};

/// The longest rule text accepted, in bytes (64 KiB).
pub const MAX_LEN: usize = 64 * 1024;

/// The deepest nesting of parentheses and `not` accepted.
pub const MAX_DEPTH: usize = 64;

/// Words that are never part of a bare event name. An event whose name contains one is
/// written as a quoted string: `"No Show"`.
pub const RESERVED: [&str; 30] = [
    "and",
    "or",
    "not",
    "no",
    "in",
    "where",
    "then",
    "within",
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "distinct",
    "first_seen",
    "last_seen",
    "trait",
    "age",
    "clv",
    "p_alive",
    "score",
    "segment",
    "between",
    "contains",
    "starts_with",
    "is",
    "null",
    "true",
    "false",
    "ago",
];

/// Why a rule text did not parse: where, what was expected there and what was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: expected {expected}, found {found}")]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// What would have been accepted there, e.g. "`)`" or "a duration such as 30d".
    pub expected: String,
    /// What is there, e.g. "`xyz`" or "end of input".
    pub found: String,
}

/// Parses the text form of a rule.
///
/// ```
/// use niyet_rules::{parse, Rule};
/// let rule = parse("count(Order Completed in 90d) >= 2").unwrap();
/// assert!(matches!(rule, Rule::Aggregate(_)));
/// assert_eq!(
///     parse("count(Order Completed in 90d >= 2").unwrap_err().to_string(),
///     "line 1, column 30: expected `)`, found `>=`"
/// );
/// ```
pub fn parse(text: &str) -> Result<Rule, ParseError> {
    if text.len() > MAX_LEN {
        return Err(ParseError {
            line: 1,
            column: 1,
            expected: format!("a rule of at most {} KiB", MAX_LEN / 1024),
            found: format!("a text of {} bytes", text.len()),
        });
    }
    let (toks, eof) = Lexer::new(text).run();
    let mut p = Parser {
        toks,
        eof,
        pos: 0,
        depth: 0,
    };
    let rule = p.or()?;
    if !matches!(p.peek().tok, Tok::Eof) {
        return Err(p.err("`and`, `or` or the end of the rule"));
    }
    Ok(rule)
}

/// Whether `c` can start a bare word (an event-name word).
pub(crate) fn is_word_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

/// Whether `c` can continue a bare word.
pub(crate) fn is_word_continue(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '\'' | '/')
}

/// Whether `w` is one bare word (not checking reserved words).
pub(crate) fn is_bare_word(w: &str) -> bool {
    let mut cs = w.chars();
    cs.next().is_some_and(is_word_start) && cs.all(is_word_continue)
}

/// Whether `w` is a reserved word.
pub(crate) fn is_reserved(w: &str) -> bool {
    RESERVED.contains(&w)
}

/// Whether `s` is a bare path segment: `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn is_ident(s: &str) -> bool {
    let mut cs = s.chars();
    cs.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The keyword of an aggregate.
pub(crate) fn agg_name(agg: Agg) -> &'static str {
    match agg {
        Agg::Count => "count",
        Agg::Sum => "sum",
        Agg::Avg => "avg",
        Agg::Min => "min",
        Agg::Max => "max",
        Agg::Distinct => "distinct",
    }
}

fn agg_of(word: &str) -> Option<Agg> {
    Some(match word {
        "count" => Agg::Count,
        "sum" => Agg::Sum,
        "avg" => Agg::Avg,
        "min" => Agg::Min,
        "max" => Agg::Max,
        "distinct" => Agg::Distinct,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone)]
enum Tok {
    /// A bare word: a keyword or part of an event name or path.
    Word(String),
    /// A quoted string, unescaped.
    Str(String),
    /// A number.
    Num(f64),
    /// A number immediately followed by letters: a duration, checked where one is expected.
    Dur,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    Star,
    Cmp(Cmp),
    /// A character that starts no token.
    Bad,
    Eof,
    /// The text cannot be split into tokens here (an unterminated string, a bad escape).
    Error(Box<ParseError>),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
    column: usize,
    /// The source text of the token.
    text: String,
}

struct Lexer<'a> {
    src: &'a str,
    chars: Vec<(usize, char)>,
    i: usize,
    line: usize,
    col: usize,
}

impl<'a> Lexer<'a> {
    fn new(src: &'a str) -> Self {
        Lexer {
            src,
            chars: src.char_indices().collect(),
            i: 0,
            line: 1,
            col: 1,
        }
    }

    fn peek_at(&self, k: usize) -> Option<char> {
        self.chars.get(self.i + k).map(|&(_, c)| c)
    }

    fn peek_is(&self, k: usize, f: impl Fn(char) -> bool) -> bool {
        self.peek_at(k).is_some_and(f)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek_at(0)?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    /// Byte offset of the current character.
    fn byte(&self) -> usize {
        self.chars.get(self.i).map_or(self.src.len(), |&(b, _)| b)
    }

    fn error_here(&self, expected: String, found: String) -> ParseError {
        ParseError {
            line: self.line,
            column: self.col,
            expected,
            found,
        }
    }

    fn skip_trivia(&mut self) {
        while let Some(c) = self.peek_at(0) {
            if c == '#' {
                while self.peek_is(0, |c| c != '\n') {
                    self.bump();
                }
            } else if c.is_whitespace() {
                self.bump();
            } else {
                break;
            }
        }
    }

    /// All tokens, ending with `Eof` or `Error`; and an `Eof` token for reading past it.
    fn run(mut self) -> (Vec<Token>, Token) {
        let mut out = Vec::new();
        let mut end = (1, 1);
        loop {
            self.skip_trivia();
            let (line, column, start) = (self.line, self.col, self.byte());
            let Some(c) = self.peek_at(0) else {
                break;
            };
            let tok = match c {
                '(' | ')' | '[' | ']' | ',' | '.' | '*' | '=' => {
                    self.bump();
                    match c {
                        '(' => Tok::LParen,
                        ')' => Tok::RParen,
                        '[' => Tok::LBracket,
                        ']' => Tok::RBracket,
                        ',' => Tok::Comma,
                        '.' => Tok::Dot,
                        '*' => Tok::Star,
                        _ => Tok::Cmp(Cmp::Eq),
                    }
                }
                '!' | '<' | '>' => {
                    self.bump();
                    let eq = self.peek_at(0) == Some('=');
                    if eq {
                        self.bump();
                    }
                    match (c, eq) {
                        ('!', true) => Tok::Cmp(Cmp::Ne),
                        ('<', false) => Tok::Cmp(Cmp::Lt),
                        ('<', true) => Tok::Cmp(Cmp::Le),
                        ('>', false) => Tok::Cmp(Cmp::Gt),
                        ('>', true) => Tok::Cmp(Cmp::Ge),
                        _ => Tok::Bad,
                    }
                }
                '"' => match self.string(line, column) {
                    Ok(s) => Tok::Str(s),
                    Err(e) => Tok::Error(Box::new(e)),
                },
                c if c.is_ascii_digit()
                    || (c == '-' && self.peek_is(1, |d| d.is_ascii_digit())) =>
                {
                    self.number(line, column)
                }
                c if is_word_start(c) => {
                    while self.peek_is(0, is_word_continue) {
                        self.bump();
                    }
                    Tok::Word(self.src[start..self.byte()].to_string())
                }
                _ => {
                    self.bump();
                    Tok::Bad
                }
            };
            let stop = matches!(tok, Tok::Error(_));
            let text = self.src.get(start..self.byte()).unwrap_or("").to_string();
            out.push(Token {
                tok,
                line,
                column,
                text,
            });
            if stop {
                break;
            }
            end = (self.line, self.col);
        }
        let eof = Token {
            tok: Tok::Eof,
            line: end.0,
            column: end.1,
            text: String::new(),
        };
        if !matches!(
            out.last(),
            Some(Token {
                tok: Tok::Error(_),
                ..
            })
        ) {
            out.push(eof.clone());
        }
        (out, eof)
    }

    fn digits(&mut self) {
        while let Some(c) = self.peek_at(0) {
            if c.is_ascii_digit() || (c == '_' && self.peek_is(1, |d| d.is_ascii_digit())) {
                self.bump();
            } else {
                break;
            }
        }
    }

    /// A number, or a duration when letters follow immediately (`30d`, `5y`).
    fn number(&mut self, line: usize, column: usize) -> Tok {
        let start = self.byte();
        if self.peek_at(0) == Some('-') {
            self.bump();
        }
        self.digits();
        if self.peek_at(0) == Some('.') && self.peek_is(1, |c| c.is_ascii_digit()) {
            self.bump();
            self.digits();
        }
        if self.peek_is(0, |c| c == 'e' || c == 'E')
            && (self.peek_is(1, |c| c.is_ascii_digit())
                || (self.peek_is(1, |c| c == '+' || c == '-')
                    && self.peek_is(2, |c| c.is_ascii_digit())))
        {
            self.bump();
            if self.peek_is(0, |c| c == '+' || c == '-') {
                self.bump();
            }
            self.digits();
        }
        if self.peek_is(0, |c| c.is_alphanumeric() || c == '_') {
            while self.peek_is(0, |c| c.is_alphanumeric() || c == '_') {
                self.bump();
            }
            return Tok::Dur;
        }
        let text = self.src.get(start..self.byte()).unwrap_or("");
        match text.replace('_', "").parse::<f64>() {
            Ok(v) if v.is_finite() => Tok::Num(v),
            _ => Tok::Error(Box::new(ParseError {
                line,
                column,
                expected: "a number of a usable size".into(),
                found: quote_found(text),
            })),
        }
    }

    /// A quoted string with JSON escapes; the opening quote is at `line`, `column`.
    fn string(&mut self, line: usize, column: usize) -> Result<String, ParseError> {
        self.bump();
        let mut out = String::new();
        let unterminated = |lx: &Self, found: &str| {
            lx.error_here(
                format!("`\"` to end the string started at line {line}, column {column}"),
                found.to_string(),
            )
        };
        loop {
            match self.peek_at(0) {
                None => return Err(unterminated(self, "end of input")),
                Some('\n') => return Err(unterminated(self, "end of line")),
                Some('"') => {
                    self.bump();
                    return Ok(out);
                }
                Some('\\') => {
                    let (el, ec) = (self.line, self.col);
                    let bad = |esc: String| ParseError {
                        line: el,
                        column: ec,
                        expected: "an escape (\\\", \\\\, \\n, \\t, \\r, \\/ or \\uXXXX)".into(),
                        found: if esc.is_empty() {
                            "end of input".into()
                        } else {
                            format!("`\\{esc}`")
                        },
                    };
                    self.bump();
                    let Some(e) = self.bump() else {
                        return Err(bad(String::new()));
                    };
                    match e {
                        '"' => out.push('"'),
                        '\\' => out.push('\\'),
                        '/' => out.push('/'),
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        'b' => out.push('\u{8}'),
                        'f' => out.push('\u{c}'),
                        'u' => {
                            let hi = self.hex4().ok_or_else(|| bad("u".into()))?;
                            let c = if (0xD800..0xDC00).contains(&hi) {
                                // A surrogate pair: `\uD83D\uDE00`.
                                let pair =
                                    self.peek_at(0) == Some('\\') && self.peek_at(1) == Some('u');
                                if !pair {
                                    return Err(bad(format!("u{hi:04X}")));
                                }
                                self.bump();
                                self.bump();
                                let lo = self.hex4().ok_or_else(|| bad("u".into()))?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(bad(format!("u{hi:04X}\\u{lo:04X}")));
                                }
                                char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                            } else {
                                char::from_u32(hi)
                            };
                            match c {
                                Some(c) => out.push(c),
                                None => return Err(bad(format!("u{hi:04X}"))),
                            }
                        }
                        other => return Err(bad(other.to_string())),
                    }
                }
                Some(c) => {
                    self.bump();
                    out.push(c);
                }
            }
        }
    }

    /// Four hex digits after `\u`.
    fn hex4(&mut self) -> Option<u32> {
        let mut v = 0;
        for _ in 0..4 {
            let d = self.peek_at(0)?.to_digit(16)?;
            self.bump();
            v = v * 16 + d;
        }
        Some(v)
    }
}

/// `found` text for a piece of source: in backticks, shortened when long.
fn quote_found(text: &str) -> String {
    const MAX: usize = 40;
    if text.chars().count() > MAX {
        let short: String = text.chars().take(MAX).collect();
        format!("`{short}…`")
    } else {
        format!("`{text}`")
    }
}

// ---------------------------------------------------------------------------------------
// Parser

const CMP_EXPECTED: &str = "a comparison (=, !=, <, <=, >, >=)";
const DUR_EXPECTED: &str = "a duration such as 30d";
const TEST_EXPECTED: &str =
    "a test (=, !=, <, <=, >, >=, in, not in, contains, starts_with, between or is null)";
const VALUE_EXPECTED: &str = "a value (a \"string\", a number, true or false)";

struct Parser {
    toks: Vec<Token>,
    /// Returned when reading past the end.
    eof: Token,
    pos: usize,
    /// Current nesting of parentheses and `not`.
    depth: usize,
}

type Res<T> = Result<T, ParseError>;

impl Parser {
    fn peek(&self) -> &Token {
        self.toks.get(self.pos).unwrap_or(&self.eof)
    }

    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(&self.peek().tok, Tok::Word(x) if x == w)
    }

    fn eat_word(&mut self, w: &str) -> bool {
        let yes = self.is_word(w);
        if yes {
            self.bump();
        }
        yes
    }

    /// An error at the current token (or the lexer's error when that is where it stopped).
    fn err(&self, expected: impl Into<String>) -> ParseError {
        let t = self.peek();
        if let Tok::Error(e) = &t.tok {
            return (**e).clone();
        }
        ParseError {
            line: t.line,
            column: t.column,
            expected: expected.into(),
            found: match t.tok {
                Tok::Eof => "end of input".into(),
                _ => quote_found(&t.text),
            },
        }
    }

    fn expect_word(&mut self, w: &str, expected: &str) -> Res<()> {
        if self.eat_word(w) {
            Ok(())
        } else {
            Err(self.err(expected))
        }
    }

    fn expect(&mut self, f: fn(&Tok) -> bool, expected: &str) -> Res<()> {
        if f(&self.peek().tok) {
            self.bump();
            Ok(())
        } else {
            Err(self.err(expected))
        }
    }

    fn lparen(&mut self) -> Res<()> {
        self.expect(|t| matches!(t, Tok::LParen), "`(`")
    }

    fn rparen(&mut self) -> Res<()> {
        self.expect(|t| matches!(t, Tok::RParen), "`)`")
    }

    /// Enters one level of parentheses or `not`.
    fn enter(&mut self) -> Res<()> {
        if self.depth >= MAX_DEPTH {
            return Err(self.err(format!(
                "at most {MAX_DEPTH} levels of parentheses and `not` (simplify the rule)"
            )));
        }
        self.depth += 1;
        Ok(())
    }

    fn or(&mut self) -> Res<Rule> {
        let first = self.and()?;
        if !self.is_word("or") {
            return Ok(first);
        }
        let mut all = vec![first];
        while self.eat_word("or") {
            all.push(self.and()?);
        }
        Ok(Rule::Or(all))
    }

    fn and(&mut self) -> Res<Rule> {
        let first = self.unary()?;
        if !self.is_word("and") {
            return Ok(first);
        }
        let mut all = vec![first];
        while self.eat_word("and") {
            all.push(self.unary()?);
        }
        Ok(Rule::And(all))
    }

    fn unary(&mut self) -> Res<Rule> {
        if self.is_word("not") {
            self.enter()?;
            self.bump();
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Rule::Not(Box::new(inner)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Res<Rule> {
        let word = match &self.peek().tok {
            Tok::LParen => {
                self.enter()?;
                self.bump();
                let inner = self.or()?;
                self.rparen()?;
                self.depth -= 1;
                return Ok(inner);
            }
            Tok::Str(_) | Tok::Star => return self.event_rule(),
            Tok::Word(w) => w.clone(),
            _ => return Err(self.err("a rule")),
        };
        if let Some(agg) = agg_of(&word) {
            return self.aggregate(agg);
        }
        match word.as_str() {
            "no" => {
                self.bump();
                let event = self.matcher()?;
                let window = self.window()?;
                Ok(Rule::No(Events { event, window }))
            }
            "first_seen" | "last_seen" => {
                self.bump();
                let event = if matches!(self.peek().tok, Tok::LParen) {
                    self.bump();
                    let m = self.matcher()?;
                    self.rparen()?;
                    Some(m)
                } else {
                    None
                };
                let test = self.time_test(&word)?;
                Ok(Rule::Seen(Seen {
                    last: word == "last_seen",
                    event,
                    test,
                }))
            }
            "trait" => {
                self.bump();
                self.expect(
                    |t| matches!(t, Tok::Dot),
                    "`.` and a trait name, as in trait.city",
                )?;
                let name = self.path("a trait name, as in trait.city")?;
                let test = self.test()?;
                Ok(Rule::Trait(TraitTest { name, test }))
            }
            "age" => {
                self.bump();
                Ok(Rule::Age(self.test()?))
            }
            // Lifetime-value metrics: traits of their own, named with a `$`.
            "clv" | "p_alive" => {
                let name = format!("{}{word}", crate::METRIC_PREFIX);
                self.bump();
                Ok(Rule::Trait(TraitTest {
                    name,
                    test: self.test()?,
                }))
            }
            "score" => {
                self.bump();
                self.lparen()?;
                let name = match &self.peek().tok {
                    Tok::Str(s) if !s.trim().is_empty() => s.clone(),
                    _ => return Err(self.err("a score name in quotes, as in score(\"lead\")")),
                };
                self.bump();
                self.rparen()?;
                Ok(Rule::Trait(TraitTest {
                    name: format!("{}{}{name}", crate::METRIC_PREFIX, crate::SCORE_METRIC),
                    test: self.test()?,
                }))
            }
            "segment" => {
                self.bump();
                self.lparen()?;
                let name = match &self.peek().tok {
                    Tok::Str(s) if !s.is_empty() => s.clone(),
                    _ => return Err(self.err("a segment name in quotes, as in segment(\"VIP\")")),
                };
                self.bump();
                self.rparen()?;
                Ok(Rule::Segment(name))
            }
            w if is_reserved(w) => Err(self.err("a rule")),
            _ => self.event_rule(),
        }
    }

    /// `E [in D]` or `A then B within W [in D]`.
    fn event_rule(&mut self) -> Res<Rule> {
        let first = self.matcher()?;
        if self.eat_word("then") {
            let then = self.matcher()?;
            self.expect_word(
                "within",
                "`within` and a duration, as in A then B within 30m",
            )?;
            let within = self.dur()?;
            let window = self.window()?;
            return Ok(Rule::Sequence(Sequence {
                first,
                then,
                within,
                window,
            }));
        }
        let window = self.window()?;
        Ok(Rule::Has(Events {
            event: first,
            window,
        }))
    }

    /// `count(E [where F] [in D]) cmp n`, `sum(E.prop [where F] [in D]) cmp n`, ...
    fn aggregate(&mut self, agg: Agg) -> Res<Rule> {
        let name = agg_name(agg);
        self.bump();
        self.lparen()?;
        let event_name = self.name()?;
        let prop = if matches!(self.peek().tok, Tok::Dot) {
            if agg == Agg::Count {
                return Err(self.err(
                    "`where`, `in` or `)`: count counts events and takes no property, \
                     as in count(Order Completed in 90d)",
                ));
            }
            self.bump();
            Some(self.path("a property name")?)
        } else if agg != Agg::Count {
            let example = match agg {
                Agg::Distinct => "distinct(Product Viewed.category in 30d)".to_string(),
                _ => format!("{name}(Order Completed.revenue in 365d)"),
            };
            return Err(self.err(format!(
                "`.` and a property: {name} needs a property, as in {example}"
            )));
        } else {
            None
        };
        let (filter, grouped) = self.filter()?;
        let window = self.window()?;
        if !matches!(self.peek().tok, Tok::RParen) {
            return Err(if !filter.is_empty() && !grouped && self.is_word("and") {
                self.err("`)` (several conditions go in parentheses: where (a = 1 and b = 2))")
            } else if window.is_none() {
                self.err("`where`, `in` or `)`")
            } else {
                self.err("`)`")
            });
        }
        self.bump();
        let cmp = self.cmp()?;
        let value = self.number()?;
        Ok(Rule::Aggregate(Aggregate {
            agg,
            of: Events {
                event: Match {
                    name: event_name,
                    filter,
                },
                window,
            },
            prop,
            cmp,
            value,
        }))
    }

    /// `name [where filter]`.
    fn matcher(&mut self) -> Res<Match> {
        let name = self.name()?;
        let (filter, _) = self.filter()?;
        Ok(Match { name, filter })
    }

    /// An event name: a quoted string, `*`, or bare words.
    fn name(&mut self) -> Res<String> {
        match &self.peek().tok {
            Tok::Str(s) if !s.is_empty() => {
                let s = s.clone();
                self.bump();
                Ok(s)
            }
            Tok::Star => {
                self.bump();
                Ok("*".into())
            }
            Tok::Word(w) if !is_reserved(w) => {
                let mut name = w.clone();
                self.bump();
                while let Tok::Word(w) = &self.peek().tok {
                    if is_reserved(w) {
                        break;
                    }
                    name.push(' ');
                    name.push_str(w);
                    self.bump();
                }
                Ok(name)
            }
            Tok::Word(_) => Err(self.err(
                "an event name (names containing words such as `no` or `in` go in quotes: \"No Show\")",
            )),
            _ => Err(self.err("an event name")),
        }
    }

    /// `[where proptest]` or `[where (proptest and ...)]`; and whether in parentheses.
    fn filter(&mut self) -> Res<(Vec<PropTest>, bool)> {
        if !self.eat_word("where") {
            return Ok((Vec::new(), false));
        }
        if !matches!(self.peek().tok, Tok::LParen) {
            return Ok((vec![self.prop_test()?], false));
        }
        self.bump();
        let mut all = vec![self.prop_test()?];
        while self.eat_word("and") {
            all.push(self.prop_test()?);
        }
        self.expect(|t| matches!(t, Tok::RParen), "`and` or `)`")?;
        Ok((all, true))
    }

    fn prop_test(&mut self) -> Res<PropTest> {
        let prop = self.path("a property name")?;
        let test = self.test()?;
        Ok(PropTest { prop, test })
    }

    /// `seg(.seg)*`, joined with `.`.
    fn path(&mut self, expected: &str) -> Res<String> {
        let mut out = String::new();
        loop {
            match &self.peek().tok {
                Tok::Word(w) if is_ident(w) => out.push_str(w),
                Tok::Str(s) if !s.is_empty() => out.push_str(s),
                Tok::Word(w) => {
                    return Err(self.err(format!(
                        "{expected} (names with other characters go in quotes: \"{w}\")"
                    )))
                }
                _ => return Err(self.err(expected)),
            }
            self.bump();
            if !matches!(self.peek().tok, Tok::Dot) {
                return Ok(out);
            }
            self.bump();
            out.push('.');
        }
    }

    /// `[in D]`.
    fn window(&mut self) -> Res<Option<Dur>> {
        if self.eat_word("in") {
            Ok(Some(self.dur()?))
        } else {
            Ok(None)
        }
    }

    fn dur(&mut self) -> Res<Dur> {
        let t = self.peek();
        match t.tok {
            Tok::Dur => {}
            Tok::Num(_) => {
                return Err(self.err(format!(
                    "{DUR_EXPECTED} (a number and a unit: ms, s, m, h, d or w)"
                )))
            }
            _ => return Err(self.err(DUR_EXPECTED)),
        }
        let text = t.text.as_str();
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        let unit = text.get(digits..).unwrap_or("");
        if digits == 0 || !unit.chars().all(|c| c.is_alphabetic()) {
            return Err(self.err(format!("{DUR_EXPECTED} (a whole number and a unit)")));
        }
        if !matches!(unit, "ms" | "s" | "m" | "h" | "d" | "w") {
            return Err(self.err(format!("{DUR_EXPECTED} (units: ms, s, m, h, d, w)")));
        }
        match text.parse::<Dur>() {
            Ok(d) => {
                self.bump();
                Ok(d)
            }
            Err(_) => Err(self.err("a duration from 1ms to 100 years")),
        }
    }

    fn cmp(&mut self) -> Res<Cmp> {
        match self.peek().tok {
            Tok::Cmp(c) => {
                self.bump();
                Ok(c)
            }
            _ => Err(self.err(CMP_EXPECTED)),
        }
    }

    fn number(&mut self) -> Res<f64> {
        match self.peek().tok {
            Tok::Num(v) => {
                self.bump();
                Ok(v)
            }
            _ => Err(self.err("a number")),
        }
    }

    fn string(&mut self, expected: &str) -> Res<String> {
        match &self.peek().tok {
            Tok::Str(s) => {
                let s = s.clone();
                self.bump();
                Ok(s)
            }
            _ => Err(self.err(expected)),
        }
    }

    fn literal(&mut self, expected: &str) -> Res<Literal> {
        let lit = match &self.peek().tok {
            Tok::Str(s) => Literal::Str(s.clone()),
            Tok::Num(v) => Literal::Num(*v),
            Tok::Word(w) if w == "true" => Literal::Bool(true),
            Tok::Word(w) if w == "false" => Literal::Bool(false),
            _ => return Err(self.err(expected)),
        };
        self.bump();
        Ok(lit)
    }

    fn list(&mut self) -> Res<Vec<Literal>> {
        self.expect(
            |t| matches!(t, Tok::LBracket),
            "a list in brackets, as in [\"a\", \"b\"]",
        )?;
        let mut out = Vec::new();
        if matches!(self.peek().tok, Tok::RBracket) {
            self.bump();
            return Ok(out);
        }
        loop {
            out.push(self.literal(VALUE_EXPECTED)?);
            match self.peek().tok {
                Tok::Comma => {
                    self.bump();
                }
                Tok::RBracket => {
                    self.bump();
                    return Ok(out);
                }
                _ => return Err(self.err("`,` or `]`")),
            }
        }
    }

    /// A test of a value: comparison, `in`, `not in`, `contains`, `starts_with`,
    /// `between`, `is [not] null`.
    fn test(&mut self) -> Res<Test> {
        if let Tok::Cmp(c) = self.peek().tok {
            self.bump();
            if self.is_word("null") {
                return match c {
                    Cmp::Eq => {
                        self.bump();
                        Ok(Test::IsNull)
                    }
                    Cmp::Ne => {
                        self.bump();
                        Ok(Test::IsNotNull)
                    }
                    _ => Err(self.err("a number or a string (only = and != work with null)")),
                };
            }
            let expected = match c {
                Cmp::Eq | Cmp::Ne => "a value (a \"string\", a number, true, false or null)",
                _ => VALUE_EXPECTED,
            };
            return Ok(Test::Cmp(c, self.literal(expected)?));
        }
        let Tok::Word(w) = &self.peek().tok else {
            return Err(self.err(TEST_EXPECTED));
        };
        match w.as_str() {
            "in" => {
                self.bump();
                Ok(Test::In(self.list()?))
            }
            "not" => {
                self.bump();
                self.expect_word("in", "`in` and a list, as in not in [\"a\", \"b\"]")?;
                Ok(Test::NotIn(self.list()?))
            }
            "contains" => {
                self.bump();
                Ok(Test::Contains(self.string("a string in quotes")?))
            }
            "starts_with" => {
                self.bump();
                Ok(Test::StartsWith(self.string("a string in quotes")?))
            }
            "between" => {
                self.bump();
                let lo = self.number()?;
                self.expect_word("and", "`and` and a number, as in between 25 and 34")?;
                let hi = self.number()?;
                Ok(Test::Between(lo, hi))
            }
            "is" => {
                self.bump();
                let not = self.eat_word("not");
                self.expect_word(
                    "null",
                    if not {
                        "`null`"
                    } else {
                        "`null` or `not null`"
                    },
                )?;
                Ok(if not { Test::IsNotNull } else { Test::IsNull })
            }
            _ => Err(self.err(TEST_EXPECTED)),
        }
    }

    /// `cmp D ago`, `is null`, `is not null`.
    fn time_test(&mut self, what: &str) -> Res<TimeTest> {
        if let Tok::Cmp(c) = self.peek().tok {
            self.bump();
            let d = self.dur()?;
            self.expect_word("ago", &format!("`ago`, as in {what} < 30d ago"))?;
            return Ok(TimeTest::Ago(c, d));
        }
        if self.eat_word("is") {
            let not = self.eat_word("not");
            self.expect_word(
                "null",
                if not {
                    "`null`"
                } else {
                    "`null` or `not null`"
                },
            )?;
            return Ok(if not {
                TimeTest::IsNotNull
            } else {
                TimeTest::IsNull
            });
        }
        Err(self.err(format!(
            "a comparison with a time, as in {what} < 30d ago, or is null"
        )))
    }
}
