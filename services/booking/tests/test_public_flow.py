from __future__ import annotations


async def test_seed_004_estimator_and_lead(gateway, http, make_org):
    org = await make_org()
    headers = {"X-Test-Org": org.org_id}
    r = await http.post(
        f"{gateway.url}/v1/estimate", json={"beds": 2, "baths": 1.5, "cleaning_type": "deep"}, headers=headers
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["pricing_config_id"] and body["total_before_tax"] > 0
    r = await http.post(
        f"{gateway.url}/v1/leads",
        headers=headers,
        json={
            "name": "Smoke Lead",
            "phone": "780-555-0000",
            "email": "lead@example.com",
            "postal_code": "T5J0N3",
            "structured_inputs": {"beds": 1, "baths": 1, "cleaning_type": "standard"},
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["lead_id"]
    assert r.json()["phone"] == "+17805550000" and r.json()["postal_code"] == "T5J 0N3"
