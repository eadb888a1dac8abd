//! `raftlog certs`: a cluster CA and node certificates for local, compose and
//! Kubernetes use, without openssl.
//!
//! Why in the binary: mutual TLS is only used if it is easy to turn on. The node
//! certificates carry what the node checks ([`crate::tls::verify_node_id`]): the
//! node id as a DNS name, plus the host names and addresses peers dial.
//!
//! Invariants:
//! - an existing CA in the output directory is reused (so nodes can be added to a
//!   running cluster); it is never overwritten, and neither is a node's files;
//! - private keys are written with mode 0600;
//! - every node certificate is valid for both server and client authentication.

use clap::Args;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// `raftlog certs` flags.
#[derive(Args, Debug, Clone)]
pub struct CertsArgs {
    /// Directory for ca.pem, ca.key and <node>.pem, <node>.key (created if missing).
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// Node ids, comma separated; `id=host1+host2` adds names for that node only
    /// (e.g. `n1=node1,n2=node2` for compose, where hosts differ from ids).
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<String>,
    /// Extra DNS names or IP addresses for every node certificate (wildcards such
    /// as `*.raftlog.default.svc.cluster.local` allowed). localhost, 127.0.0.1 and
    /// ::1 are always included.
    #[arg(long, value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Validity of node certificates, in days (the CA gets ten times as long).
    #[arg(long, default_value_t = 825)]
    pub days: i64,
}

/// Runs `raftlog certs`; the error is one line for the operator.
pub fn run(args: &CertsArgs) -> Result<(), String> {
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let (ca, ca_key) = load_or_create_ca(&args.out, args.days.saturating_mul(10))?;
    for spec in &args.nodes {
        let (id, own_hosts) = parse_node(spec)?;
        let (cert_path, key_path) = node_paths(&args.out, &id);
        if cert_path.exists() || key_path.exists() {
            println!("{}: exists, kept", cert_path.display());
            continue;
        }
        let mut names = vec![id.clone()];
        names.extend(own_hosts);
        names.extend(args.hosts.iter().cloned());
        names.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
        names.dedup();
        let (cert, key) = node_cert(&id, names, args.days, &ca, &ca_key)?;
        write(&cert_path, cert.pem().as_bytes(), 0o644)?;
        write(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        println!("{}: node {id}", cert_path.display());
    }
    Ok(())
}

/// `n1` or `n1=host1+host2`.
fn parse_node(spec: &str) -> Result<(String, Vec<String>), String> {
    let (id, hosts) = spec.split_once('=').unwrap_or((spec, ""));
    let id = id.trim();
    if id.is_empty() || id.contains(['/', ' ']) {
        return Err(format!("--nodes: bad node id {id:?}"));
    }
    let hosts = hosts
        .split('+')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(String::from)
        .collect();
    Ok((id.to_string(), hosts))
}

fn node_paths(dir: &Path, id: &str) -> (PathBuf, PathBuf) {
    (dir.join(format!("{id}.pem")), dir.join(format!("{id}.key")))
}

fn load_or_create_ca(dir: &Path, days: i64) -> Result<(Certificate, KeyPair), String> {
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    if cert_path.exists() {
        let cert_pem = read(&cert_path)?;
        let key = KeyPair::from_pem(&read(&key_path)?)
            .map_err(|e| format!("{}: {e}", key_path.display()))?;
        let params = CertificateParams::from_ca_cert_pem(&cert_pem)
            .map_err(|e| format!("{}: {e}", cert_path.display()))?;
        // Re-signing with the same key and params gives an equivalent issuer.
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        println!("{}: existing CA, reused", cert_path.display());
        return Ok((cert, key));
    }
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "raftlog cluster CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, days);
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    write(&cert_path, cert.pem().as_bytes(), 0o644)?;
    write(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    println!("{}: new CA", cert_path.display());
    Ok((cert, key))
}

fn node_cert(
    id: &str,
    names: Vec<String>,
    days: i64,
    ca: &Certificate,
    ca_key: &KeyPair,
) -> Result<(Certificate, KeyPair), String> {
    let mut params =
        CertificateParams::new(names).map_err(|e| format!("node {id}: bad host name: {e}"))?;
    params.distinguished_name.push(DnType::CommonName, id);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut params, days);
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params
        .signed_by(&key, ca, ca_key)
        .map_err(|e| format!("node {id}: {e}"))?;
    Ok((cert, key))
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    // A little slack for clocks that are slightly behind.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days.max(1));
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn write(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_specs() {
        assert_eq!(parse_node("n1").unwrap(), ("n1".into(), vec![]));
        assert_eq!(
            parse_node("n1=node1+n1.example").unwrap(),
            ("n1".into(), vec!["node1".into(), "n1.example".into()])
        );
        assert!(parse_node("=x").is_err());
        assert!(parse_node("a/b").is_err());
    }

    #[test]
    fn makes_a_ca_and_node_certificates_that_name_the_node_and_reuses_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let args = CertsArgs {
            out: dir.path().to_path_buf(),
            nodes: vec!["n1=node1".into()],
            hosts: vec!["10.0.0.7".into()],
            days: 30,
        };
        run(&args).unwrap();
        let ca1 = std::fs::read(dir.path().join("ca.pem")).unwrap();
        run(&CertsArgs {
            nodes: vec!["n2".into()],
            ..args
        })
        .unwrap();
        assert_eq!(ca1, std::fs::read(dir.path().join("ca.pem")).unwrap());
        let mode = std::fs::metadata(dir.path().join("n1.key")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        for node in ["n1", "n2"] {
            let pem = std::fs::read(dir.path().join(format!("{node}.pem"))).unwrap();
            let der = rustls_pemfile::certs(&mut &pem[..])
                .next()
                .unwrap()
                .unwrap();
            crate::tls::verify_node_id(std::slice::from_ref(&der), node).unwrap();
            assert!(crate::tls::verify_node_id(&[der], "n3").is_err());
        }
    }
}
