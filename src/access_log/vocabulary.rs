//! The words path masking reads a segment by: the ones that announce a person or a secret in
//! the segment after them, and file extensions, which tell a file (`app.min.css`) from a name
//! (`first.last`).

/// Segments after one of these words name a person or carry a secret, whatever they look like.
pub(super) const SENSITIVE_WORDS: [&[u8]; 60] = [
    b"reset",
    b"token",
    b"tokens",
    b"invite",
    b"invites",
    b"invitation",
    b"confirm",
    b"confirmation",
    b"verify",
    b"verification",
    b"activate",
    b"activation",
    b"unsubscribe",
    b"password",
    b"passwd",
    b"magic",
    b"login",
    b"signin",
    b"auth",
    b"session",
    b"sessions",
    b"key",
    b"keys",
    b"apikey",
    b"secret",
    b"secrets",
    b"share",
    // People, under the words apps file them by.
    b"u",
    b"user",
    b"users",
    b"usr",
    b"uid",
    b"userid",
    b"username",
    b"profile",
    b"profiles",
    b"account",
    b"accounts",
    b"member",
    b"members",
    b"people",
    b"person",
    b"employee",
    b"employees",
    b"staff",
    b"customer",
    b"customers",
    b"client",
    b"clients",
    b"patient",
    b"patients",
    b"student",
    b"students",
    b"author",
    b"authors",
    b"owner",
    b"owners",
    b"contact",
    b"email",
    b"mail",
];

/// File extensions: a segment `word.word` ending in one is a file, otherwise a name
/// (`first.last`).
pub(super) const EXTENSIONS: [&[u8]; 44] = [
    b"html", b"htm", b"xhtml", b"css", b"js", b"mjs", b"map", b"json", b"xml", b"txt", b"md",
    b"csv", b"pdf", b"png", b"jpg", b"jpeg", b"gif", b"svg", b"ico", b"webp", b"avif", b"woff",
    b"ttf", b"eot", b"otf", b"ics", b"webm", b"zip", b"gz", b"tar", b"tgz", b"php", b"asp",
    b"aspx", b"jsp", b"cgi", b"yaml", b"yml", b"toml", b"wasm", b"rss", b"atom", b"sig", b"asc",
];

/// The longest of [`SENSITIVE_WORDS`]: a longer word is none of them.
pub(super) const LONGEST_SENSITIVE: usize = {
    let mut longest = 0;
    let mut i = 0;
    while i < SENSITIVE_WORDS.len() {
        if SENSITIVE_WORDS[i].len() > longest {
            longest = SENSITIVE_WORDS[i].len();
        }
        i += 1;
    }
    longest
};
