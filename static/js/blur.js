// Background blur: what is behind you is blurred in the page, before your video leaves it.
//
// A person segmentation model (MediaPipe's selfie segmentation, served by roomrelay at
// /vendor/selfie_segmentation/ when installed) tells you from the background; each camera
// frame is drawn sharp where you are and blurred elsewhere, and that picture is what the
// others (and your own tile) see. The model runs as fast as the machine allows, beside the
// frames: every frame uses the latest mask, so a slow computer blurs a little late rather
// than dropping frames. Until the first mask the whole picture is blurred, so the room is
// never shown by accident.
//
// Where the browser has MediaStreamTrackProcessor/Generator (Chromium) frames are processed
// as they arrive, also in a background tab; elsewhere a canvas is painted at each video frame.

const MODEL_BASE = "/vendor/selfie_segmentation/";
const BLUR_PX = 12;
const EDGE_SOFTENING_PX = 2;

let modelScript = null;

/** Whether this server offers the model (the page hides the blur setting otherwise). */
export async function blurAvailable() {
  if (typeof OffscreenCanvas === "undefined" && !HTMLCanvasElement.prototype.captureStream) return false;
  try {
    const response = await fetch(MODEL_BASE + "selfie_segmentation.js", { method: "HEAD" });
    return response.ok;
  } catch {
    return false;
  }
}

function loadModelScript() {
  modelScript ??= new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = MODEL_BASE + "selfie_segmentation.js";
    script.onload = resolve;
    script.onerror = () => {
      modelScript = null;
      reject(new Error("Background blur is not available on this server."));
    };
    document.head.append(script);
  });
  return modelScript;
}

/** One camera track blurred: ``track`` is the one to send and show; stop() when done. */
export class BlurredCamera {
  /** The blurred video track. */
  track = null;
  #camera;
  #model = null;
  #mask; // the latest person mask, copied out of the model's results
  #source = document.createElement("canvas"); // the frame the model is working on
  #hasMask = false;
  #segmenting = false;
  #stopped = false;
  #canvas;
  #context;
  #painter = null; // the fallback path's <video> and its frame callback

  /** The camera track this blurs. */
  get camera() {
    return this.#camera;
  }

  /** Resolves once the blurred track exists (the model may still be loading). */
  static async start(camera) {
    await loadModelScript();
    const blurred = new BlurredCamera(camera);
    await blurred.#begin();
    return blurred;
  }

  constructor(camera) {
    this.#camera = camera;
    const { width = 640, height = 360 } = camera.getSettings();
    this.#canvas = document.createElement("canvas");
    this.#canvas.width = width;
    this.#canvas.height = height;
    this.#context = this.#canvas.getContext("2d");
    this.#mask = document.createElement("canvas");
    this.#mask.width = width;
    this.#mask.height = height;
  }

  async #begin() {
    this.#model = new window.SelfieSegmentation({ locateFile: (file) => MODEL_BASE + file });
    this.#model.setOptions({ modelSelection: 1 }); // the landscape model: webcams are landscape
    this.#model.onResults((results) => this.#keepMask(results.segmentationMask));
    if (typeof MediaStreamTrackProcessor === "function" && typeof MediaStreamTrackGenerator === "function") {
      this.#processFrames();
    } else {
      this.#paintFrames();
    }
    this.track.enabled = this.#camera.enabled;
  }

  /** Chromium: transform each VideoFrame of the camera into a blurred one. */
  #processFrames() {
    const processor = new MediaStreamTrackProcessor({ track: this.#camera });
    const generator = new MediaStreamTrackGenerator({ kind: "video" });
    const transform = new TransformStream({
      transform: (frame, controller) => {
        this.#compose(frame, frame.displayWidth, frame.displayHeight);
        const blurred = new VideoFrame(this.#canvas, { timestamp: frame.timestamp });
        frame.close();
        controller.enqueue(blurred);
      },
    });
    processor.readable
      .pipeThrough(transform)
      .pipeTo(generator.writable)
      .catch(() => {}); // the camera or the generator stopped
    this.track = generator;
  }

  /** Elsewhere: paint the canvas at each frame of a <video> playing the camera. */
  #paintFrames() {
    const video = document.createElement("video");
    video.muted = true;
    video.playsInline = true;
    video.srcObject = new MediaStream([this.#camera]);
    video.play().catch(() => {});
    const paint = () => {
      if (this.#stopped) return;
      if (video.videoWidth) this.#compose(video, video.videoWidth, video.videoHeight);
      if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(paint);
      else setTimeout(paint, 1000 / 30);
    };
    paint();
    this.#painter = video;
    [this.track] = this.#canvas.captureStream().getVideoTracks();
  }

  /** Draw ``image`` (width × height): you sharp over your blurred surroundings. */
  #compose(image, width, height) {
    const canvas = this.#canvas;
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = this.#mask.width = width;
      canvas.height = this.#mask.height = height;
      this.#hasMask = false;
    }
    const context = this.#context;
    context.save();
    context.clearRect(0, 0, width, height);
    if (this.#hasMask) {
      context.filter = `blur(${EDGE_SOFTENING_PX}px)`;
      context.drawImage(this.#mask, 0, 0, width, height);
      context.filter = "none";
      context.globalCompositeOperation = "source-in";
      context.drawImage(image, 0, 0, width, height);
      context.globalCompositeOperation = "destination-over";
    }
    context.filter = `blur(${BLUR_PX}px)`;
    context.drawImage(image, 0, 0, width, height);
    context.restore();
    this.#segment(image, width, height);
  }

  /** Start the model on this frame unless it is still busy with an earlier one. */
  #segment(image, width, height) {
    if (this.#segmenting || this.#stopped) return;
    this.#segmenting = true;
    // A copy: the frame is closed (or the video moves on) before the model reads it.
    this.#source.width = width;
    this.#source.height = height;
    this.#source.getContext("2d").drawImage(image, 0, 0, width, height);
    this.#model
      .send({ image: this.#source })
      .catch(() => {}) // a frame it could not read: the next one will do
      .finally(() => {
        this.#segmenting = false;
      });
  }

  /** The model's results live only during its callback: copy the mask out. */
  #keepMask(mask) {
    if (this.#stopped) return;
    const context = this.#mask.getContext("2d");
    context.clearRect(0, 0, this.#mask.width, this.#mask.height);
    context.drawImage(mask, 0, 0, this.#mask.width, this.#mask.height);
    this.#hasMask = true;
  }

  stop() {
    this.#stopped = true;
    this.track?.stop();
    if (this.#painter) this.#painter.srcObject = null;
    this.#model?.close().catch(() => {});
  }
}
