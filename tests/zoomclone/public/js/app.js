// A client that follows the zoom-clone video-stage contract (shared/notes/zoom-clone-protocol.md):
// media first, one RTCPeerConnection, join_room(name), re-offer on every welcome, answer any
// offer, trickle ICE with the room name last, one remote <video>.
const socket = io();

const welcomeDiv = document.getElementById("welcome");
const callDiv = document.getElementById("call");
const ownVideo = document.getElementById("myFace");
const remoteVideo = document.getElementById("peerFace");
const muteButton = document.getElementById("mute");
const cameraButton = document.getElementById("camera");
const cameraSelect = document.getElementById("cameras");

let localStream;
let joinedRoom;
let myPeerConnection;
let chatChannel;
let micOff = false;
let cameraOff = false;

async function listCameras() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  const current = localStream.getVideoTracks()[0];
  cameraSelect.innerHTML = "";
  for (const device of devices.filter((d) => d.kind === "videoinput")) {
    const option = document.createElement("option");
    option.value = device.deviceId;
    option.textContent = device.label || device.deviceId;
    option.selected = current && current.label === device.label;
    cameraSelect.appendChild(option);
  }
}

async function openMedia(deviceId) {
  const video = deviceId ? { deviceId: { exact: deviceId } } : { facingMode: "user" };
  localStream = await navigator.mediaDevices.getUserMedia({ audio: true, video });
  ownVideo.srcObject = localStream;
  if (!deviceId) await listCameras();
}

muteButton.addEventListener("click", () => {
  micOff = !micOff;
  localStream.getAudioTracks().forEach((track) => { track.enabled = !micOff; });
  muteButton.textContent = micOff ? "Unmute" : "Mute";
});

cameraButton.addEventListener("click", () => {
  cameraOff = !cameraOff;
  localStream.getVideoTracks().forEach((track) => { track.enabled = !cameraOff; });
  cameraButton.textContent = cameraOff ? "Turn camera on" : "Turn camera off";
});

cameraSelect.addEventListener("input", async () => {
  await openMedia(cameraSelect.value);
  const sender = myPeerConnection.getSenders().find((s) => s.track && s.track.kind === "video");
  if (sender) await sender.replaceTrack(localStream.getVideoTracks()[0]);
});

function buildConnection() {
  myPeerConnection = new RTCPeerConnection({
    iceServers: [{ urls: ["stun:stun.l.google.com:19302", "stun:stun1.l.google.com:19302"] }],
  });
  myPeerConnection.addEventListener("icecandidate", (event) => {
    socket.emit("ice", event.candidate, joinedRoom);
  });
  myPeerConnection.addEventListener("track", (event) => {
    if (event.streams[0]) remoteVideo.srcObject = event.streams[0];
  });
  localStream.getTracks().forEach((track) => myPeerConnection.addTrack(track, localStream));
}

welcomeDiv.querySelector("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = welcomeDiv.querySelector("input");
  welcomeDiv.hidden = true;
  callDiv.hidden = false;
  await openMedia();
  buildConnection();
  joinedRoom = input.value;
  socket.emit("join_room", joinedRoom);
  input.value = "";
});

socket.on("welcome", async () => {
  chatChannel = myPeerConnection.createDataChannel("chat");
  chatChannel.addEventListener("message", (event) => console.log(event.data));
  const offer = await myPeerConnection.createOffer();
  myPeerConnection.setLocalDescription(offer);
  socket.emit("offer", offer, joinedRoom);
});

socket.on("offer", async (offer) => {
  myPeerConnection.addEventListener("datachannel", (event) => { chatChannel = event.channel; });
  await myPeerConnection.setRemoteDescription(offer);
  const answer = await myPeerConnection.createAnswer();
  myPeerConnection.setLocalDescription(answer);
  socket.emit("answer", answer, joinedRoom);
});

socket.on("answer", (answer) => myPeerConnection.setRemoteDescription(answer));

socket.on("ice", (candidate) => myPeerConnection.addIceCandidate(candidate));
