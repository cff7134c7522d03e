package defender

import (
	"fmt"
	"net/http"
	"os"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// CredentialKind names an azidentity credential type
// (ENRICHER_AZURE_CREDENTIAL).
type CredentialKind string

// The credential kinds the connector can use.
const (
	CredentialDefault          CredentialKind = "default"
	CredentialClientSecret     CredentialKind = "client-secret"
	CredentialClientCert       CredentialKind = "client-certificate"
	CredentialWorkloadIdentity CredentialKind = "workload-identity"
	CredentialManagedIdentity  CredentialKind = "managed-identity"
	CredentialAzureCLI         CredentialKind = "azure-cli"
)

// CredentialKinds lists every kind, for validation and help text.
var CredentialKinds = []CredentialKind{
	CredentialDefault, CredentialClientSecret, CredentialClientCert,
	CredentialWorkloadIdentity, CredentialManagedIdentity, CredentialAzureCLI,
}

// CredentialOptions configure NewCredential.
type CredentialOptions struct {
	// AuthorityHost is the Entra authority (Endpoint.AuthorityHost).
	AuthorityHost string
	// DisableInstanceDiscovery is for private or simulated authorities: MSAL
	// then trusts AuthorityHost instead of asking login.microsoftonline.com.
	DisableInstanceDiscovery bool
	// HTTPClient carries the token requests; nil means azcore's default.
	HTTPClient *http.Client
	// Getenv reads the AZURE_* variables; nil means os.Getenv.
	Getenv func(string) string
}

// NewCredential builds one credential of the given kind from azidentity's
// own variables: AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET,
// AZURE_CLIENT_CERTIFICATE_PATH (and AZURE_CLIENT_CERTIFICATE_PASSWORD),
// AZURE_FEDERATED_TOKEN_FILE. It does no network I/O; a missing variable is
// an error that names it. Build one per process: each keeps its own token
// cache.
func NewCredential(kind CredentialKind, o CredentialOptions) (azcore.TokenCredential, error) {
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	client := azcore.ClientOptions{Cloud: cloud.Configuration{ActiveDirectoryAuthorityHost: o.AuthorityHost}}
	if o.HTTPClient != nil {
		client.Transport = o.HTTPClient
	}
	require := func(names ...string) error {
		for _, n := range names {
			if getenv(n) == "" {
				return fmt.Errorf("ENRICHER_AZURE_CREDENTIAL=%s needs %s", kind, n)
			}
		}
		return nil
	}
	tenant, clientID := getenv("AZURE_TENANT_ID"), getenv("AZURE_CLIENT_ID")
	switch kind {
	case CredentialDefault, "":
		return azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{
			ClientOptions:            client,
			DisableInstanceDiscovery: o.DisableInstanceDiscovery,
			TenantID:                 tenant,
		})
	case CredentialClientSecret:
		if err := require("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"); err != nil {
			return nil, err
		}
		return azidentity.NewClientSecretCredential(tenant, clientID, getenv("AZURE_CLIENT_SECRET"),
			&azidentity.ClientSecretCredentialOptions{ClientOptions: client, DisableInstanceDiscovery: o.DisableInstanceDiscovery})
	case CredentialClientCert:
		if err := require("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_CERTIFICATE_PATH"); err != nil {
			return nil, err
		}
		path := getenv("AZURE_CLIENT_CERTIFICATE_PATH")
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("AZURE_CLIENT_CERTIFICATE_PATH: %w", err)
		}
		var password []byte
		if p := getenv("AZURE_CLIENT_CERTIFICATE_PASSWORD"); p != "" {
			password = []byte(p)
		}
		certs, key, err := azidentity.ParseCertificates(data, password)
		if err != nil {
			return nil, fmt.Errorf("AZURE_CLIENT_CERTIFICATE_PATH %s: %w", path, err)
		}
		return azidentity.NewClientCertificateCredential(tenant, clientID, certs, key,
			&azidentity.ClientCertificateCredentialOptions{ClientOptions: client, DisableInstanceDiscovery: o.DisableInstanceDiscovery})
	case CredentialWorkloadIdentity:
		if err := require("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_FEDERATED_TOKEN_FILE"); err != nil {
			return nil, err
		}
		return azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
			ClientOptions:            client,
			TenantID:                 tenant,
			ClientID:                 clientID,
			TokenFilePath:            getenv("AZURE_FEDERATED_TOKEN_FILE"),
			DisableInstanceDiscovery: o.DisableInstanceDiscovery,
		})
	case CredentialManagedIdentity:
		opts := &azidentity.ManagedIdentityCredentialOptions{ClientOptions: client}
		if clientID != "" {
			opts.ID = azidentity.ClientID(clientID) // user-assigned identity
		}
		return azidentity.NewManagedIdentityCredential(opts)
	case CredentialAzureCLI:
		return azidentity.NewAzureCLICredential(&azidentity.AzureCLICredentialOptions{TenantID: tenant})
	}
	return nil, fmt.Errorf("ENRICHER_AZURE_CREDENTIAL %q is not one of %v", kind, CredentialKinds)
}
