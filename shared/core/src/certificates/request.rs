//! What a PKCS#10 certificate request asks for: subject CN and O, subject alternative names and
//! the key's kind. The API server has already checked the request's self-signature on create, so
//! this only reads it. Pure.

use std::net::IpAddr;

use x509_cert::der::asn1::{Ia5StringRef, ObjectIdentifier, OctetString, PrintableStringRef, Utf8StringRef};
use x509_cert::der::{Decode, DecodePem, Tag, Tagged};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::request::{CertReq, ExtensionReq};

const CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const O: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");
const EXTENSION_REQUEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.14");
const SUBJECT_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// The request's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on P-256, what a kubelet generates for its TLS bootstrap.
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// Anything else, by its algorithm OID.
    Other(String),
}

/// What the request asks to be certified.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Requested {
    /// Every common name in the subject (a well-formed kubelet request has one).
    pub common_names: Vec<String>,
    /// Every organisation in the subject.
    pub organizations: Vec<String>,
    /// Other subject attributes (OU, C, …), by OID.
    pub other_subject: Vec<String>,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// Whether it asks for other kinds of alternative name (email, URI, …) or other extensions.
    pub other_names: bool,
    /// The public key's kind.
    pub key: Option<KeyKind>,
}

/// A request that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the certificate request cannot be read: {0}")]
pub struct Unreadable(pub String);

fn text(value: &x509_cert::attr::AttributeValue) -> Option<String> {
    match value.tag() {
        Tag::Utf8String => Utf8StringRef::try_from(value).ok().map(|s| s.as_str().to_string()),
        Tag::PrintableString => PrintableStringRef::try_from(value).ok().map(|s| s.as_str().to_string()),
        Tag::Ia5String => Ia5StringRef::try_from(value).ok().map(|s| s.as_str().to_string()),
        _ => None,
    }
}

/// Reads a PEM (or DER) PKCS#10 request.
pub fn parse(request: &[u8]) -> Result<Requested, Unreadable> {
    let req = CertReq::from_pem(request)
        .or_else(|_| CertReq::from_der(request))
        .map_err(|e| Unreadable(e.to_string()))?;
    let mut out = Requested::default();
    for rdn in req.info.subject.0.iter() {
        for atv in rdn.0.iter() {
            let value = text(&atv.value).ok_or_else(|| Unreadable(format!("subject attribute {} is not a string", atv.oid)))?;
            match atv.oid {
                CN => out.common_names.push(value),
                O => out.organizations.push(value),
                other => out.other_subject.push(other.to_string()),
            }
        }
    }
    for attr in req.info.attributes.iter() {
        if attr.oid != EXTENSION_REQUEST {
            out.other_names = true;
            continue;
        }
        for value in attr.values.iter() {
            let ext = value.decode_as::<ExtensionReq>().map_err(|e| Unreadable(e.to_string()))?;
            for e in ext.0 {
                if e.extn_id == SUBJECT_ALT_NAME {
                    alt_names(&e.extn_value, &mut out)?;
                } else {
                    out.other_names = true;
                }
            }
        }
    }
    let alg = &req.info.public_key.algorithm;
    let curve = alg.parameters.as_ref().and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    out.key = Some(match (alg.oid, curve) {
        (EC_PUBLIC_KEY, Some(P256)) => KeyKind::EcdsaP256,
        (EC_PUBLIC_KEY, Some(P384)) => KeyKind::EcdsaP384,
        (oid, _) => KeyKind::Other(oid.to_string()),
    });
    Ok(out)
}

fn alt_names(der: &OctetString, out: &mut Requested) -> Result<(), Unreadable> {
    let san = SubjectAltName::from_der(der.as_bytes()).map_err(|e| Unreadable(e.to_string()))?;
    for name in san.0 {
        match name {
            GeneralName::DnsName(d) => out.dns_names.push(d.as_str().to_string()),
            GeneralName::IpAddress(ip) => {
                let bytes = ip.as_bytes();
                let addr = <[u8; 4]>::try_from(bytes)
                    .map(IpAddr::from)
                    .or_else(|_| <[u8; 16]>::try_from(bytes).map(IpAddr::from))
                    .map_err(|_| Unreadable("an IP address alternative name of neither 4 nor 16 bytes".into()))?;
                out.ip_addresses.push(addr);
            }
            _ => out.other_names = true,
        }
    }
    Ok(())
}
