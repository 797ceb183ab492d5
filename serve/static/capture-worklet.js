// AudioWorklet processor: hands each block of microphone samples (mono float32 at the
// AudioContext's rate, 128 per block) to the page, which batches them.
class Capture extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) this.port.postMessage(channel.slice(0));
    return true;
  }
}

registerProcessor("capture", Capture);
