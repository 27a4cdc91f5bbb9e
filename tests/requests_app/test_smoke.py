from requests_app.audit import audit_verify
from requests_app.models import AccessRequest
from requests_app.services import access_check, request_create, request_review


def test_two_approvals_grant_access(requester, reviewer, reviewer2, prod_ssh, web1, web2):
    req = request_create(requester=requester, resources=[web1], reason="INC-1")
    assert req.roles.get() == prod_ssh
    request_review(request=req, reviewer=reviewer, decision="approve", reason="ok")
    req.refresh_from_db()
    assert req.state == AccessRequest.State.PENDING
    request_review(request=req, reviewer=reviewer2, decision="approve", reason="ok")
    req.refresh_from_db()
    assert req.state == AccessRequest.State.APPROVED
    assert access_check(user=requester, resource=web1, login="ubuntu").allowed
    assert not access_check(user=requester, resource=web2, login="ubuntu").allowed
    assert not access_check(user=requester, resource=web1, login="root").allowed
    assert audit_verify().ok
