//! TUF specification path matching for delegations (TUF 1.0 §5.6.7.2,
//! python-tuf's `_is_target_in_pathpattern`): used by the repository
//! tooling before it writes a target and by the client on the chain that
//! vouches for a target, where tough's glob (which lets `*` match `/`) is
//! looser than the specification.

/// TUF specification path matching (python-tuf's `_is_target_in_pathpattern`):
/// pattern and target have the same number of `/`-separated parts and each
/// part matches as a shell glob (`*`, `?`, `[seq]`, `[!seq]`), so `*` never
/// matches `/`.
pub(crate) fn matches(pattern: &str, target: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').collect();
    let t: Vec<&str> = target.split('/').collect();
    p.len() == t.len()
        && p.iter().zip(&t).all(|(p, t)| {
            let p: Vec<char> = p.chars().collect();
            let t: Vec<char> = t.chars().collect();
            fnmatch(&p, &t)
        })
}

/// Shell glob over one path part, as Python's `fnmatch.fnmatchcase`.
/// Backtracks to the last `*` only, so it runs in O(|p|·|t|).
fn fnmatch(p: &[char], t: &[char]) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        let step = match p.get(pi) {
            Some('*') => {
                star = Some((pi + 1, ti));
                pi += 1;
                continue;
            }
            Some('?') => Some(1),
            Some('[') => class(&p[pi..], t[ti]),
            Some(&c) if c == t[ti] => Some(1),
            _ => None,
        };
        match (step, star) {
            (Some(n), _) => {
                pi += n;
                ti += 1;
            }
            (None, Some((sp, st))) => {
                pi = sp;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            (None, None) => return false,
        }
    }
    p.get(pi..).unwrap_or_default().iter().all(|&c| c == '*')
}

/// Matches `c` against the `[…]` class at the start of `p`: the length of
/// pattern it takes, or `None`. An unclosed `[` is a literal `[`.
fn class(p: &[char], c: char) -> Option<usize> {
    let mut i = 1;
    let negate = p.get(i) == Some(&'!');
    if negate {
        i += 1;
    }
    // A `]` right after `[` or `[!` belongs to the set.
    let close = p
        .get(i + 1..)
        .and_then(|rest| rest.iter().position(|&b| b == ']'))
        .map(|k| k + i + 1);
    let Some(close) = close else {
        return (c == '[').then_some(1);
    };
    let set = &p[i..close];
    let mut hit = false;
    let mut k = 0;
    while k < set.len() {
        if k + 2 < set.len() && set[k + 1] == '-' {
            hit |= (set[k]..=set[k + 2]).contains(&c);
            k += 3;
        } else {
            hit |= set[k] == c;
            k += 1;
        }
    }
    (hit != negate).then_some(close + 1)
}

#[cfg(test)]
mod tests {
    use super::matches as m;

    #[test]
    fn spec_path_matching_is_per_part() {
        assert!(m("server/*", "server/confidant"));
        assert!(!m("server/*", "server/a/b"), "`*` must not match `/`");
        assert!(m("server/*/*", "server/a/b"));
        assert!(m("*", "x"));
        assert!(!m("*", "a/b"));
        assert!(m("models/*.cmdl", "models/smol.cmdl"));
        assert!(!m("models/*.cmdl", "models/smol.gguf"));
        assert!(m("a/b?", "a/bc"));
        assert!(!m("a/b?", "a/b"));
        assert!(m("a/f[0-9]", "a/f7"));
        assert!(!m("a/f[!0-9]", "a/f7"));
        assert!(m("a/f[!0-9]", "a/fx"));
        assert!(m("a/[]]", "a/]"));
        assert!(m("a/[", "a/["), "an unclosed `[` is literal");
        assert!(!m("a/[", "a/x"));
        assert!(m("a/*b*c", "a/xxbyyc"));
        assert!(!m("a/*b*c", "a/xxbyy"));
        assert!(m("a/**", "a/anything"));
        assert!(m("", ""));
        assert!(!m("", "a"));
    }
}
