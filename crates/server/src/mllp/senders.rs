//! `[[mllp.senders]]`: which sending facilities (MSH-4) may send, from
//! which addresses, and with which client certificate.
//!
//! The listener's `allow` says who may connect at all; these rules say
//! what a connection may speak for. A message is taken only when its
//! MSH-4 names a listed facility, the connection comes from one of that
//! facility's address blocks, and, for a facility with certificate names,
//! the connection's client certificate (checked against
//! `mllp.tls_client_ca` in the handshake) is valid for one of them. So a
//! certificate issued to one EHR cannot send another facility's patients.
//! Without rules every facility is taken, as before.

use std::collections::HashMap;
use std::net::IpAddr;

use rustls::pki_types::{CertificateDer, ServerName};
use serde::Deserialize;

/// One `[[mllp.senders]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SenderRule {
    /// MSH-4's first component (HD.1) exactly as the EHR sends it.
    pub facility: String,
    /// Source address blocks (CIDR) the facility sends from; empty: any
    /// address the listener's own `allow` admits.
    #[serde(default)]
    pub allow: Vec<ipnet::IpNet>,
    /// DNS names or IP addresses; when any is given, the facility's
    /// messages are taken only over TLS from a connection whose client
    /// certificate is valid for one of them.
    #[serde(default)]
    pub certificate_names: Vec<String>,
}

/// The rules, checked once at start.
#[derive(Debug, Default)]
pub struct Senders {
    rules: HashMap<String, Rule>,
}

#[derive(Debug)]
struct Rule {
    allow: Vec<ipnet::IpNet>,
    certificate_names: Vec<ServerName<'static>>,
}

/// Why a message was refused, in words for the sender (ERR-8) and the
/// log. It names the facility and the address, never a patient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "the sending facility {facility:?} (MSH-4) is not one this Enroll takes messages from; \
         its administrator lists senders in [[mllp.senders]]"
    )]
    UnknownFacility { facility: String },
    #[error("the sending facility {facility:?} may not send from the address {peer}")]
    Address { facility: String, peer: IpAddr },
    #[error(
        "the sending facility {facility:?} must send over the TLS port with its client certificate"
    )]
    NoCertificate { facility: String },
    #[error("the client certificate is not issued to the sending facility {facility:?}")]
    WrongCertificate { facility: String },
}

impl Senders {
    /// Reads the rules; `client_ca` says whether the TLS port checks
    /// client certificates (a certificate name needs it).
    pub fn from_rules(rules: &[SenderRule], client_ca: bool) -> Result<Senders, String> {
        let mut checked = HashMap::new();
        for rule in rules {
            let facility = rule.facility.trim();
            if facility.is_empty() {
                return Err(
                    "an [[mllp.senders]] entry has no facility: set facility to MSH-4 \
                            as the EHR sends it"
                        .into(),
                );
            }
            if !rule.certificate_names.is_empty() && !client_ca {
                return Err(format!(
                    "mllp.senders {facility:?} names certificates: set mllp.tls_client_ca to \
                     the PEM file of the CA that signs them"
                ));
            }
            let certificate_names = rule
                .certificate_names
                .iter()
                .map(|name| {
                    ServerName::try_from(name.trim().to_string()).map_err(|_| {
                        format!(
                            "mllp.senders {facility:?}: {name:?} is not a DNS name or an IP \
                             address"
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let rule = Rule {
                allow: rule.allow.clone(),
                certificate_names,
            };
            if checked.insert(facility.to_string(), rule).is_some() {
                return Err(format!(
                    "mllp.senders lists the facility {facility:?} twice: merge the entries"
                ));
            }
        }
        Ok(Senders { rules: checked })
    }

    /// True when any facility may send (no rules).
    pub fn is_open(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether `facility` may send on a connection from `peer` that
    /// presented `certificate` (already verified against the client CA).
    pub fn check(
        &self,
        facility: &str,
        peer: IpAddr,
        certificate: Option<&CertificateDer<'_>>,
    ) -> Result<(), Refusal> {
        if self.is_open() {
            return Ok(());
        }
        let facility = facility.trim();
        let Some(rule) = self.rules.get(facility) else {
            return Err(Refusal::UnknownFacility {
                facility: facility.to_string(),
            });
        };
        let peer = super::unmapped(peer);
        if !rule.allow.is_empty() && !rule.allow.iter().any(|net| net.contains(&peer)) {
            return Err(Refusal::Address {
                facility: facility.to_string(),
                peer,
            });
        }
        if rule.certificate_names.is_empty() {
            return Ok(());
        }
        let Some(certificate) = certificate else {
            return Err(Refusal::NoCertificate {
                facility: facility.to_string(),
            });
        };
        if rule
            .certificate_names
            .iter()
            .any(|name| valid_for(certificate, name))
        {
            Ok(())
        } else {
            Err(Refusal::WrongCertificate {
                facility: facility.to_string(),
            })
        }
    }
}

/// True when the certificate's subject alternative names cover `name`,
/// by the same rules a TLS client checks a server's name with.
fn valid_for(certificate: &CertificateDer<'_>, name: &ServerName<'_>) -> bool {
    webpki::EndEntityCert::try_from(certificate)
        .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(name).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(facility: &str, allow: &[&str], names: &[&str]) -> SenderRule {
        SenderRule {
            facility: facility.into(),
            allow: allow.iter().map(|a| a.parse().unwrap()).collect(),
            certificate_names: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    #[test]
    fn without_rules_every_facility_is_taken() {
        let senders = Senders::from_rules(&[], false).unwrap();
        assert!(senders.is_open());
        let peer = "203.0.113.5".parse().unwrap();
        assert_eq!(senders.check("ANY", peer, None), Ok(()));
    }

    #[test]
    fn a_facility_sends_only_from_its_blocks() {
        let senders = Senders::from_rules(
            &[
                rule("GENHOSP", &["10.20.0.0/16"], &[]),
                rule("LAB", &[], &[]),
            ],
            false,
        )
        .unwrap();
        let inside: IpAddr = "10.20.1.2".parse().unwrap();
        let outside: IpAddr = "10.21.1.2".parse().unwrap();
        assert_eq!(senders.check("GENHOSP", inside, None), Ok(()));
        // An IPv4 peer on an IPv6 socket is still inside its block.
        let mapped: IpAddr = "::ffff:10.20.1.2".parse().unwrap();
        assert_eq!(senders.check("GENHOSP", mapped, None), Ok(()));
        assert_eq!(
            senders.check("GENHOSP", outside, None),
            Err(Refusal::Address {
                facility: "GENHOSP".into(),
                peer: outside
            })
        );
        assert_eq!(senders.check("LAB", outside, None), Ok(()));
        assert_eq!(
            senders.check("OTHER", inside, None),
            Err(Refusal::UnknownFacility {
                facility: "OTHER".into()
            })
        );
    }

    #[test]
    fn certificate_names_need_a_client_ca_and_a_certificate() {
        let named = [rule("GENHOSP", &[], &["ehr.genhosp.example"])];
        let refused = Senders::from_rules(&named, false).unwrap_err();
        assert!(refused.contains("mllp.tls_client_ca"), "{refused}");
        let senders = Senders::from_rules(&named, true).unwrap();
        let peer = "127.0.0.1".parse().unwrap();
        assert_eq!(
            senders.check("GENHOSP", peer, None),
            Err(Refusal::NoCertificate {
                facility: "GENHOSP".into()
            })
        );
        // Not a certificate at all: it names nobody.
        let junk = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
        assert_eq!(
            senders.check("GENHOSP", peer, Some(&junk)),
            Err(Refusal::WrongCertificate {
                facility: "GENHOSP".into()
            })
        );
    }

    #[test]
    fn mistakes_in_the_rules_are_named() {
        let twice = [rule("A", &[], &[]), rule(" A ", &[], &[])];
        assert!(
            Senders::from_rules(&twice, false)
                .unwrap_err()
                .contains("twice")
        );
        let empty = [rule(" ", &[], &[])];
        assert!(
            Senders::from_rules(&empty, false)
                .unwrap_err()
                .contains("no facility")
        );
        let bad_name = [rule("A", &[], &["not a name"])];
        assert!(
            Senders::from_rules(&bad_name, true)
                .unwrap_err()
                .contains("not a DNS name")
        );
    }
}
