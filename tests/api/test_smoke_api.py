def test_flow(api, requester, reviewer, reviewer2, prod_ssh, web1, web2, dev1):
    c = api(requester)
    r = c.get("/api/v1/resources/?label=env=prod")
    assert r.status_code == 200, r.content
    print(r.json())
    r = c.post("/api/v1/requests/", {"resources": ["node/web-1", web2.pk], "reason": "INC-1", "duration": "30m"})
    assert r.status_code == 201, r.content
    rid = r.json()["id"]
    print(r.json())
    r = api(reviewer).post(f"/api/v1/requests/{rid}/reviews/", {"decision": "approve", "reason": "ok"})
    assert r.status_code == 201, r.content
    r = api(reviewer2).post(f"/api/v1/requests/{rid}/reviews/", {"decision": "approve", "reason": "ok"})
    assert r.status_code == 201, r.content
    print(r.json())
    r = c.get("/api/v1/access-check/?resource=node/web-1&login=ubuntu")
    print(r.json())
    assert r.json()["allowed"]
    r = c.get("/api/v1/grants/?active=true")
    print(r.json())
    r = c.post("/api/v1/requests/", {"resources": ["node/web-1"], "duration": "0"})
    print(r.status_code, r.json())
    r = c.post("/api/v1/requests/", {"resources": ["node/nope"], "duration": "2h"})
    print(r.status_code, r.json())
