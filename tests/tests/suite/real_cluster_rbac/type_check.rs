//! The policies as the API server compiled them: all there, whole, and clean of type errors.

use std::collections::BTreeSet;

use k8s_openapi::api::admissionregistration::v1beta1::ValidatingAdmissionPolicy;
use kube::api::Api;
use worldland_tests::real_cluster::{admin, until};

use crate::manifests;

/// The policies are all there, as the manifests declare them, and the type checker (run by
/// kube-controller-manager into `status.typeChecking`) finds nothing wrong in their expressions.
/// On 1.28 and 1.29 it does not know `variables` (kubernetes/kubernetes#122935, fixed in 1.30)
/// and reports every reference to one: those reports, and only those, are tolerated.
#[tokio::test]
#[ignore = "needs a real control plane: scripts/test starts one from KUBEBUILDER_ASSETS and runs these"]
async fn the_policies_type_check_on_the_api_server() {
    let p = manifests::parse_all();
    let shipped: BTreeSet<String> = p.policies.iter().map(|x| x.metadata.name.clone().unwrap()).collect();
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(admin().await);
    let checked = until("kube-controller-manager type-checks every policy", 30, || async {
        let all = policies.list(&Default::default()).await.unwrap().items;
        let ours: Vec<_> = all
            .into_iter()
            .filter(|x| shipped.contains(x.metadata.name.as_deref().unwrap()))
            .collect();
        (ours.len() == shipped.len()
            && ours.iter().all(|x| {
                x.status
                    .as_ref()
                    .is_some_and(|s| s.type_checking.is_some() && s.observed_generation == x.metadata.generation)
            }))
        .then_some(ours)
    })
    .await;
    let mut variables_only = 0;
    for x in checked {
        let name = x.metadata.name.clone().unwrap();
        let declared = manifests::policy(&p, &name);
        let spec = x.spec.as_ref().unwrap();
        assert_eq!(
            spec.validations.as_ref().map(Vec::len),
            declared.validations.as_ref().map(Vec::len),
            "{name}: every validation arrived"
        );
        assert_eq!(
            spec.variables
                .as_ref()
                .map(|v| v.iter().map(|v| v.name.clone()).collect::<Vec<_>>()),
            declared
                .variables
                .as_ref()
                .map(|v| v.iter().map(|v| v.name.clone()).collect::<Vec<_>>()),
            "{name}: every variable arrived"
        );
        let warnings = x.status.unwrap().type_checking.unwrap().expression_warnings.unwrap_or_default();
        for w in warnings {
            let errors: Vec<&str> = w.warning.split("ERROR: ").skip(1).collect();
            assert!(!errors.is_empty(), "{name} {}: {}", w.field_ref, w.warning);
            for e in errors {
                let first = e.lines().next().unwrap_or_default();
                assert!(
                    first.ends_with("undeclared reference to 'variables' (in container '')"),
                    "{name} {}: {first}",
                    w.field_ref
                );
            }
            variables_only += 1;
        }
    }
    // Only the expressions that use variables are reported, so the checker did read the others.
    let using_variables = p
        .policies
        .iter()
        .flat_map(|x| x.spec.as_ref().unwrap().validations.iter().flatten())
        .filter(|v| v.expression.contains("variables."))
        .count();
    assert!(
        variables_only <= using_variables,
        "{variables_only} warnings, {using_variables} expressions with variables"
    );
}
