//! Message encoding and answer parsing, byte for byte, and two harmless
//! requests against the running kernel.

use super::*;

/// A header as the kernel reads it: length, type, flags, seq, port id.
fn header(len: u32, kind: u16, flags: u16, seq: u32) -> Vec<u8> {
    let mut v = len.to_ne_bytes().to_vec();
    v.extend_from_slice(&kind.to_ne_bytes());
    v.extend_from_slice(&flags.to_ne_bytes());
    v.extend_from_slice(&seq.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes());
    v
}

fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = ((4 + payload.len()) as u16).to_ne_bytes().to_vec();
    v.extend_from_slice(&kind.to_ne_bytes());
    v.extend_from_slice(payload);
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
    v
}

#[test]
fn new_dummy_is_what_ip_link_add_sends() {
    let got = new_dummy(7, "lite-apiserver0");
    let mut want = header(68, 16, 0x605, 7);
    // ifinfomsg: AF_UNSPEC, index 0, flags IFF_UP, change IFF_UP.
    want.extend_from_slice(&[0, 0, 0, 0]);
    want.extend_from_slice(&0u32.to_ne_bytes());
    want.extend_from_slice(&1u32.to_ne_bytes());
    want.extend_from_slice(&1u32.to_ne_bytes());
    want.extend(attr(3, b"lite-apiserver0\0"));
    // IFLA_LINKINFO { IFLA_INFO_KIND "dummy" }: 4 + (4 + 5, padded to 12).
    want.extend_from_slice(&16u16.to_ne_bytes());
    want.extend_from_slice(&18u16.to_ne_bytes());
    want.extend(attr(1, b"dummy"));
    assert_eq!(got, want);
    assert_eq!(got.len(), 68);
}

#[test]
fn del_link_names_the_link() {
    let got = del_link(9, "lite-apiserver0");
    let mut want = header(52, 17, 0x5, 9);
    want.extend_from_slice(&[0; 16]);
    want.extend(attr(3, b"lite-apiserver0\0"));
    assert_eq!(got, want);
}

#[test]
fn new_addr_v4_is_a_labelled_host_address() {
    let ip: IpAddr = "169.254.2.1".parse().unwrap();
    let got = addr_msg(RTM_NEWADDR, 3, 1, ip, Some("lo:lite"));
    let label = attr(3, b"lo:lite\0");
    let mut want = header((16 + 8 + 8 + 8 + label.len()) as u32, 20, 0x605, 3);
    want.extend_from_slice(&[2, 32, 0, 0]);
    want.extend_from_slice(&1u32.to_ne_bytes());
    want.extend(attr(2, &[169, 254, 2, 1]));
    want.extend(attr(1, &[169, 254, 2, 1]));
    want.extend(label);
    assert_eq!(got, want);
}

#[test]
fn del_addr_and_v6_forms() {
    let v4: IpAddr = "169.254.2.1".parse().unwrap();
    let del = addr_msg(RTM_DELADDR, 4, 5, v4, None);
    assert_eq!(
        &del[4..8],
        &[21u16.to_ne_bytes(), 0x5u16.to_ne_bytes()].concat()[..]
    );
    assert_eq!(del.len(), 16 + 8 + 8 + 8);
    // With a label, the kernel deletes only an address that carries it.
    let labelled = addr_msg(RTM_DELADDR, 4, 5, v4, Some("lo:lite"));
    assert_eq!(&labelled[40..], &attr(IFA_LABEL, b"lo:lite\0")[..]);
    let v6: IpAddr = "fd00::2:1".parse().unwrap();
    let add = addr_msg(RTM_NEWADDR, 5, 5, v6, Some("lo:lite"));
    // AF_INET6, /128, IFA_F_NODAD; IPv6 has no labels.
    assert_eq!(&add[16..20], &[10, 128, 2, 0]);
    assert_eq!(add.len(), 16 + 8 + 20 + 20);
}

#[test]
fn get_addrs_is_a_dump() {
    let got = get_addrs(11);
    let mut want = header(24, 22, 0x301, 11);
    want.extend_from_slice(&[0; 8]);
    assert_eq!(got, want);
}

/// An `NLMSG_ERROR` for request `seq` with `errno` (0: an ack).
fn error_msg(seq: u32, errno: i32) -> Vec<u8> {
    let mut v = header(36, NLMSG_ERROR, 0, seq);
    v.extend_from_slice(&errno.to_ne_bytes());
    v.extend(header(16, RTM_NEWLINK, 0x605, seq)); // the request's header
    v
}

#[test]
fn acks_and_errors_are_typed() {
    let cases: &[(i32, Result<(), Errno>)] = &[
        (0, Ok(())),
        (-1, Err(Errno::PERM)),
        (-95, Err(Errno::OPNOTSUPP)),
        (-17, Err(Errno::EXIST)),
        (-19, Err(Errno::NODEV)),
    ];
    for (errno, want) in cases {
        let buf = error_msg(42, *errno);
        let parts = messages(&buf).unwrap();
        assert_eq!(parts.len(), 1);
        let (kind, seq, payload) = parts[0];
        assert_eq!((kind, seq), (NLMSG_ERROR, 42));
        let got = ack_result("RTM_NEWLINK", payload);
        match want {
            Ok(()) => assert_eq!(got, Ok(())),
            Err(e) => {
                assert_eq!(got, Err(NetlinkError::Kernel("RTM_NEWLINK", *e)));
                assert_eq!(got.unwrap_err().kernel_errno(), Some(*e));
            }
        }
    }
    let text = NetlinkError::Kernel("RTM_NEWLINK", Errno::PERM).to_string();
    assert!(
        text.starts_with("RTM_NEWLINK: Operation not permitted"),
        "{text}"
    );
}

fn newaddr(index: u32, family: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = attrs.concat();
    let mut v = header((16 + 8 + body.len()) as u32, RTM_NEWADDR, 2, 1);
    v.extend_from_slice(&[family, if family == AF_INET { 8 } else { 128 }, 0, 0xfe]);
    v.extend_from_slice(&index.to_ne_bytes());
    v.extend(body);
    v
}

#[test]
fn a_dump_parses_into_addresses() {
    let mut datagram = newaddr(
        1,
        AF_INET,
        &[
            attr(IFA_ADDRESS, &[127, 0, 0, 1]),
            attr(IFA_LOCAL, &[127, 0, 0, 1]),
            attr(IFA_LABEL, b"lo\0"),
            attr(8, &0x80u32.to_ne_bytes()), // IFA_FLAGS: skipped
        ],
    );
    // Point-to-point: IFA_ADDRESS is the peer, IFA_LOCAL ours.
    datagram.extend(newaddr(
        4,
        AF_INET,
        &[
            attr(IFA_ADDRESS, &[10, 0, 0, 2]),
            attr(IFA_LOCAL, &[10, 0, 0, 1]),
        ],
    ));
    let v6 = "fe80::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
    datagram.extend(newaddr(2, AF_INET6, &[attr(IFA_ADDRESS, &v6)]));
    let mut done = header(20, NLMSG_DONE, 2, 1);
    done.extend_from_slice(&0i32.to_ne_bytes());
    datagram.extend(done);

    let parts = messages(&datagram).unwrap();
    assert_eq!(parts.len(), 4);
    let addrs: Vec<Address> = parts
        .iter()
        .filter(|p| p.0 == RTM_NEWADDR)
        .filter_map(|p| parse_addr(p.2))
        .collect();
    assert_eq!(
        addrs,
        vec![
            Address {
                index: 1,
                ip: "127.0.0.1".parse().unwrap(),
                prefix: 8,
                label: Some("lo".into())
            },
            Address {
                index: 4,
                ip: "10.0.0.1".parse().unwrap(),
                prefix: 8,
                label: None
            },
            Address {
                index: 2,
                ip: "fe80::1".parse().unwrap(),
                prefix: 128,
                label: None
            },
        ]
    );
    assert_eq!(parts[3].0, NLMSG_DONE);
    assert_eq!(ack_result("RTM_GETADDR", parts[3].2), Ok(()));
}

#[test]
fn malformed_answers_are_errors_not_panics() {
    let mut bad = error_msg(1, 0);
    bad[0..4].copy_from_slice(&1000u32.to_ne_bytes()); // longer than the datagram
    assert_eq!(
        messages(&bad),
        Err(NetlinkError::Malformed("message length"))
    );
    bad[0..4].copy_from_slice(&8u32.to_ne_bytes()); // shorter than a header
    assert!(messages(&bad).is_err());
    assert!(ack_result("x", &[0, 0]).is_err(), "short error payload");
    assert_eq!(parse_addr(&[2, 32, 0]), None, "short ifaddrmsg");
    // An attribute claiming more than there is ends the attributes.
    let mut truncated = vec![2, 32, 0, 0, 1, 0, 0, 0];
    truncated.extend_from_slice(&40u16.to_ne_bytes());
    truncated.extend_from_slice(&IFA_LOCAL.to_ne_bytes());
    truncated.extend_from_slice(&[169, 254, 2, 1]);
    assert_eq!(parse_addr(&truncated), None);
    // Messages for other requests are skipped by sequence number.
    let two = [error_msg(1, -1), error_msg(2, 0)].concat();
    let parts = messages(&two).unwrap();
    assert_eq!(parts.iter().map(|p| p.1).collect::<Vec<_>>(), vec![1, 2]);
}

#[test]
fn the_kernel_answers_a_dump_and_a_refused_request() {
    let mut route = match Route::open() {
        Ok(r) => r,
        Err(e) => {
            println!("SKIPPED: no netlink socket here ({e})");
            return;
        }
    };
    let lo = route.index("lo").expect("lo has an index");
    let addrs = route.addresses().expect("address dump");
    assert!(
        addrs
            .iter()
            .any(|a| a.index == lo && a.ip == IpAddr::from([127, 0, 0, 1])),
        "127.0.0.1 on lo in {addrs:?}"
    );
    assert_eq!(route.name(lo), "lo");
    // No such link: ENODEV as root, EPERM without CAP_NET_ADMIN; either
    // way a typed kernel answer, and nothing changes.
    let err = route.delete_link("lite-nosuch0").unwrap_err();
    assert!(
        matches!(err.kernel_errno(), Some(Errno::NODEV) | Some(Errno::PERM)),
        "{err:?}"
    );
}
