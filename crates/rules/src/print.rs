//! The canonical text form of a rule: `Display` for [`Rule`] and its parts.
//!
//! For every well-formed tree `r`, `parse(&r.to_string()) == Ok(r)`: nested `and`/`or`
//! groups and the operand of `not` are parenthesised when they are `and`/`or`, names that
//! are not plain words are quoted, and numbers are printed so that they read back as the
//! same `f64`.

use crate::ast::{Literal, Match, Rule, Test, TimeTest};
use crate::parse::{agg_name, is_bare_word, is_ident, is_reserved};
use std::fmt::{self, Display, Formatter, Write};

impl Display for Rule {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Rule::And(all) => join(f, all, " and "),
            Rule::Or(all) => join(f, all, " or "),
            Rule::Not(inner) => {
                f.write_str("not ")?;
                grouped(f, inner)
            }
            Rule::Aggregate(a) => {
                write!(f, "{}(", agg_name(a.agg))?;
                event_name(f, &a.of.event.name)?;
                if let Some(prop) = &a.prop {
                    f.write_char('.')?;
                    path(f, prop)?;
                }
                filter(f, &a.of.event.filter)?;
                if let Some(w) = a.of.window {
                    write!(f, " in {w}")?;
                }
                write!(f, ") {} ", a.cmp.as_str())?;
                number(f, a.value)
            }
            Rule::Has(e) => {
                write!(f, "{}", e.event)?;
                if let Some(w) = e.window {
                    write!(f, " in {w}")?;
                }
                Ok(())
            }
            Rule::No(e) => {
                write!(f, "no {}", e.event)?;
                if let Some(w) = e.window {
                    write!(f, " in {w}")?;
                }
                Ok(())
            }
            Rule::Sequence(s) => {
                write!(f, "{} then {} within {}", s.first, s.then, s.within)?;
                if let Some(w) = s.window {
                    write!(f, " in {w}")?;
                }
                Ok(())
            }
            Rule::Seen(s) => {
                f.write_str(if s.last { "last_seen" } else { "first_seen" })?;
                if let Some(m) = &s.event {
                    write!(f, "({m})")?;
                }
                write!(f, " {}", s.test)
            }
            Rule::Trait(t) if crate::metric_of(&t.name).is_some() => {
                match crate::metric_of(&t.name).and_then(crate::score_of) {
                    Some(s) => {
                        f.write_str("score(")?;
                        string(f, s)?;
                        write!(f, ") {}", t.test)
                    }
                    None => write!(f, "{} {}", &t.name[1..], t.test),
                }
            }
            Rule::Trait(t) => {
                f.write_str("trait.")?;
                path(f, &t.name)?;
                write!(f, " {}", t.test)
            }
            Rule::Age(t) => write!(f, "age {t}"),
            Rule::Segment(name) => {
                f.write_str("segment(")?;
                string(f, name)?;
                f.write_char(')')
            }
        }
    }
}

/// `name [where filter]`.
impl Display for Match {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        event_name(f, &self.name)?;
        filter(f, &self.filter)
    }
}

/// `= "x"`, `in [1, 2]`, `between 25 and 34`, `is null`, ...
impl Display for Test {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Test::Cmp(c, lit) => write!(f, "{} {lit}", c.as_str()),
            Test::In(list) => {
                f.write_str("in ")?;
                literals(f, list)
            }
            Test::NotIn(list) => {
                f.write_str("not in ")?;
                literals(f, list)
            }
            Test::Contains(s) => {
                f.write_str("contains ")?;
                string(f, s)
            }
            Test::StartsWith(s) => {
                f.write_str("starts_with ")?;
                string(f, s)
            }
            Test::Between(lo, hi) => {
                f.write_str("between ")?;
                number(f, *lo)?;
                f.write_str(" and ")?;
                number(f, *hi)
            }
            Test::IsNull => f.write_str("is null"),
            Test::IsNotNull => f.write_str("is not null"),
        }
    }
}

/// `< 60d ago`, `is null`, `is not null`.
impl Display for TimeTest {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            TimeTest::Ago(c, d) => write!(f, "{} {d} ago", c.as_str()),
            TimeTest::IsNull => f.write_str("is null"),
            TimeTest::IsNotNull => f.write_str("is not null"),
        }
    }
}

/// `"text"`, `12.5`, `true`.
impl Display for Literal {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Num(v) => number(f, *v),
            Literal::Str(s) => string(f, s),
        }
    }
}

/// Children of `and`/`or` joined by `sep`.
fn join(f: &mut Formatter<'_>, all: &[Rule], sep: &str) -> fmt::Result {
    for (i, r) in all.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        grouped(f, r)?;
    }
    Ok(())
}

/// A rule in parentheses when it is `and`/`or`.
fn grouped(f: &mut Formatter<'_>, r: &Rule) -> fmt::Result {
    if matches!(r, Rule::And(_) | Rule::Or(_)) {
        write!(f, "({r})")
    } else {
        write!(f, "{r}")
    }
}

/// An event name: bare when it is plain words (none reserved) joined by single spaces, or
/// `*`; quoted otherwise.
fn event_name(f: &mut Formatter<'_>, name: &str) -> fmt::Result {
    let bare = name == "*"
        || (!name.is_empty() && name.split(' ').all(|w| is_bare_word(w) && !is_reserved(w)));
    if bare {
        f.write_str(name)
    } else {
        string(f, name)
    }
}

/// A property or trait path: segments bare when they are identifiers, quoted otherwise; the
/// whole path quoted when it has an empty segment.
fn path(f: &mut Formatter<'_>, p: &str) -> fmt::Result {
    if p.split('.').any(str::is_empty) {
        return string(f, p);
    }
    for (i, seg) in p.split('.').enumerate() {
        if i > 0 {
            f.write_char('.')?;
        }
        if is_ident(seg) {
            f.write_str(seg)?;
        } else {
            string(f, seg)?;
        }
    }
    Ok(())
}

/// ` where test` for one test, ` where (a and b)` for several, nothing for none.
fn filter(f: &mut Formatter<'_>, tests: &[crate::ast::PropTest]) -> fmt::Result {
    match tests {
        [] => Ok(()),
        [one] => {
            f.write_str(" where ")?;
            path(f, &one.prop)?;
            write!(f, " {}", one.test)
        }
        several => {
            f.write_str(" where (")?;
            for (i, t) in several.iter().enumerate() {
                if i > 0 {
                    f.write_str(" and ")?;
                }
                path(f, &t.prop)?;
                write!(f, " {}", t.test)?;
            }
            f.write_char(')')
        }
    }
}

/// `[a, b, c]`.
fn literals(f: &mut Formatter<'_>, list: &[Literal]) -> fmt::Result {
    f.write_char('[')?;
    for (i, lit) in list.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{lit}")?;
    }
    f.write_char(']')
}

/// A number that reads back as the same `f64`: the shortest round-trip digits, written
/// plainly (`10000`, `-2.5`, `0.001`) unless very large or very small (`1e300`, `5e-324`).
fn number(f: &mut Formatter<'_>, v: f64) -> fmt::Result {
    let a = v.abs();
    if a == 0.0 || (1e-7..1e17).contains(&a) {
        write!(f, "{v}")
    } else {
        write!(f, "{v:e}")
    }
}

/// A string in double quotes with JSON-style escapes.
fn string(f: &mut Formatter<'_>, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            '\r' => f.write_str("\\r")?,
            c if c.is_control() => write!(f, "\\u{:04x}", c as u32)?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}
