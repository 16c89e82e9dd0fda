from tests.conftest import ChatDriver


async def test_a_whole_chat_from_both_sides(chat: ChatDriver) -> None:
    created = await chat.request_chat(nickname="Ann")
    assert created["nextPosition"] == 2
    agent = await chat.agent_joins()
    await chat.agent_says(agent, "Hello Ann")
    body = await chat.op("refresh", transcriptPosition="2")
    assert [m["type"] for m in body["messages"]] == ["ParticipantJoined", "Message"]
    assert body["messages"][1]["text"] == "Hello Ann"
    assert body["nextPosition"] == 4
    sent = await chat.op("send", message="Hi!", transcriptPosition="4")
    assert [m["text"] for m in sent["messages"]] == ["Hi!"]
    gone = await chat.op("disconnect")
    assert gone["chatEnded"] is True
    await chat.op("send", expect=409, message="too late")
