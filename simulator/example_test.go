package simulator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/defender-enricher/defender-enricher/simulator"
)

// A test starts a simulator, takes a token from the real azidentity
// credential wired to it, and calls Defender with the simulator's client.
func ExampleNew() {
	sim, err := simulator.New(simulator.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sim.Close()

	cred, err := sim.Credential()
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	tok, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{sim.Scope()}})
	if err != nil {
		fmt.Println(err)
		return
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, sim.URL()+"/api/alerts/636688558380765161_2136280442/user", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	req.Header.Set("Authorization", "Bearer "+tok.Token)
	resp, err := sim.Client().Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	var user struct {
		ID string `json:"id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&user); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(resp.StatusCode, user.ID == simulator.SyntheticUser("636688558380765161_2136280442")["id"])
	fmt.Println("token requests:", sim.TokenRequests())
	// Output:
	// 200 true
	// token requests: 1
}
