use super::urls::*;
use super::*;

#[test]
fn server_urls() {
    let cases = [
        (
            "https://10.0.0.1:6443",
            Some(("10.0.0.1", 6443, "10.0.0.1:6443", "")),
        ),
        (
            "https://cloud.example",
            Some(("cloud.example", 443, "cloud.example:443", "")),
        ),
        (
            "https://cloud.example:8443/k8s/",
            Some(("cloud.example", 8443, "cloud.example:8443", "/k8s")),
        ),
        ("https://[::1]:6443", Some(("::1", 6443, "[::1]:6443", ""))),
        ("http://10.0.0.1:6443", None),
        ("https://:6443", None),
        ("https://host:notaport", None),
        ("https://user@host", None),
    ];
    for (url, want) in cases {
        let got = parse_server(url).ok();
        let got = got.as_ref().map(|s| {
            (
                s.host.as_str(),
                s.port,
                s.authority.as_str(),
                s.path_prefix.as_str(),
            )
        });
        assert_eq!(got, want, "{url}");
    }
}

#[test]
fn durations() {
    let cases = [
        ("7d", Some(604_800)),
        ("12h", Some(43_200)),
        ("30m", Some(1_800)),
        ("45s", Some(45)),
        ("90", Some(90)),
        ("0", None),
        ("1w", None),
        ("", None),
        ("d", None),
    ];
    for (text, want) in cases {
        assert_eq!(
            parse_duration(text).ok().map(|d| d.as_secs()),
            want,
            "{text}"
        );
    }
}

#[test]
fn no_proxy_rules() {
    let cases = [
        ("*", "a.example", true),
        ("a.example", "a.example", true),
        (".example", "a.example", true),
        ("example", "a.example", true),
        ("example", "notexample", false),
        ("10.0.0.1", "10.0.0.1", true),
        ("10.0.0.1:6443", "10.0.0.1", true),
        ("", "a", false),
        ("b.example, c.example", "c.example", true),
    ];
    for (rule, host, want) in cases {
        assert_eq!(no_proxy_matches(rule, host), want, "{rule} {host}");
    }
}

#[test]
fn proxy_urls() {
    let p = parse_proxy("http://user:pw@proxy.local:3128", "--proxy").unwrap();
    assert_eq!((p.host.as_str(), p.port), ("proxy.local", 3128));
    assert_eq!(p.authorization.as_deref(), Some("Basic dXNlcjpwdw=="));
    assert!(parse_proxy("https://proxy", "--proxy").is_err());
    assert_eq!(base64(b"ab"), "YWI=");
    assert_eq!(base64(b"a"), "YQ==");
    assert_eq!(base64(b"abc"), "YWJj");
}

#[test]
fn env_proxy_respects_no_proxy() {
    let servers = vec![parse_server("https://10.0.0.1:6443").unwrap()];
    let env = |k: &str| match k {
        "HTTPS_PROXY" => Some("http://proxy:3128".to_owned()),
        "NO_PROXY" => Some("10.0.0.1".to_owned()),
        _ => None,
    };
    assert_eq!(choose_proxy(None, &servers, &env).unwrap(), None);
    let env2 = |k: &str| (k == "https_proxy").then(|| "http://proxy:3128".to_owned());
    assert_eq!(
        choose_proxy(None, &servers, &env2).unwrap().map(|p| p.port),
        Some(3128)
    );
}

#[test]
fn flag_errors_name_the_flag() {
    let env = |_: &str| None;
    let run = |args: &[&str]| {
        let mut v = vec!["lite-apiserver".to_owned()];
        v.extend(args.iter().map(|s| s.to_string()));
        match Config::from_args(&v, &env) {
            Err(Exit::Error(e)) => e.to_string(),
            Err(Exit::Help(_)) => "help".to_owned(),
            Err(Exit::Version(v)) => v,
            Ok(_) => "ok".to_owned(),
        }
    };
    assert!(run(&[]).starts_with("--server:"));
    assert!(run(&["--server", "http://x"]).starts_with("--server:"));
    assert!(run(&["--server", "https://x"]).starts_with("--ca-file:"));
    assert!(
        run(&["--server", "https://x", "--ca-file", "/nonexistent.pem"])
            .starts_with("--ca-file:")
    );
    assert!(run(&["--bogus"]).contains("--bogus"));
    assert!(run(&["--listen", "nope", "--server", "https://x"]).starts_with("--listen:"));
    assert_eq!(run(&["--help"]), "help");
    assert!(run(&["--version"]).starts_with("lite-apiserver "));
}
