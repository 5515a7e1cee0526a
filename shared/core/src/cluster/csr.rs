//! Certificate signing requests as the cluster port carries them ([`crate::certificates`]
//! decides them).

/// A certificate signing request as the API server holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Csr {
    /// Object name (the requester's choice: names are reused once a CSR is deleted).
    pub name: String,
    /// Object uid: this CSR and no other, ever.
    pub uid: String,
    /// When it was created (seconds since the epoch; 0 when unknown): passes take the oldest first.
    pub created_s: i64,
    /// Its resourceVersion: the precondition of the approval write.
    pub resource_version: String,
    /// `spec.signerName`.
    pub signer: String,
    /// `spec.username`: who created it, as the API server authenticated them.
    pub username: String,
    /// `spec.groups`.
    pub groups: Vec<String>,
    /// `spec.usages`.
    pub usages: Vec<String>,
    /// `spec.request`: the PEM PKCS#10 request.
    pub request: Vec<u8>,
    /// Whether it already carries an Approved or Denied condition.
    pub decided: bool,
}

/// A decision written on a CSR: its condition's type, reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrDecision {
    /// Approved (`true`) or Denied.
    pub approve: bool,
    /// The condition's reason (CamelCase).
    pub reason: String,
    /// The condition's message.
    pub message: String,
}
