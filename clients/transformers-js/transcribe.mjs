#!/usr/bin/env node
// Transcribe raw 16 kHz mono float32 clips with a local ONNX Whisper/LiteWhisper
// export through the transformers.js ASR pipeline, fully offline.
//
// usage: node transcribe.mjs --models-dir DIR --model NAME --dtype fp32|q8|...
//                            --audio-list LIST.json [--language en]
// LIST.json: [{"id": "...", "path": "clip.f32"}, ...]
// stdout: {"dtype": ..., "results": [{"id": ..., "text": ...}, ...]}

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

// The library logs info through console.log; keep stdout for the JSON result only.
console.log = (...args) => console.error(...args);

class UsageError extends Error {}

const USAGE =
    'usage: node transcribe.mjs --models-dir DIR --model NAME --dtype fp32|q8|... ' +
    '--audio-list LIST.json [--language LANG]';

function parseCli() {
    let values;
    try {
        ({ values } = parseArgs({
            options: {
                'models-dir': { type: 'string' },
                model: { type: 'string' },
                dtype: { type: 'string', default: 'fp32' },
                'audio-list': { type: 'string' },
                language: { type: 'string' },
            },
        }));
    } catch (err) {
        throw new UsageError(`${err.message}\n${USAGE}`);
    }
    for (const key of ['models-dir', 'model', 'audio-list']) {
        if (!values[key]) throw new UsageError(`missing --${key}\n${USAGE}`);
    }
    // A JSON object selects a dtype per session, e.g. {"encoder_model":"fp32","decoder_model_merged":"q8"}.
    const dtype = values.dtype.startsWith('{') ? JSON.parse(values.dtype) : values.dtype;
    return { ...values, dtype };
}

function readF32(path) {
    const bytes = readFileSync(path);
    if (bytes.byteLength % 4 !== 0) throw new Error(`${path}: size ${bytes.byteLength} is not a multiple of 4`);
    // Copy so the Float32Array is 4-byte aligned whatever offset Node's buffer pool gave us.
    const samples = new Float32Array(bytes.byteLength / 4);
    new Uint8Array(samples.buffer).set(bytes);
    return samples;
}

async function main() {
    const args = parseCli();
    const clips = JSON.parse(readFileSync(args['audio-list'], 'utf8'));
    if (!Array.isArray(clips)) throw new Error(`${args['audio-list']}: expected a JSON array`);

    // Import after patching console so nothing the library prints at load time reaches stdout.
    const { env, pipeline } = await import('@huggingface/transformers');
    env.localModelPath = args['models-dir'];
    env.allowLocalModels = true;
    env.allowRemoteModels = false;
    env.useFSCache = false; // nothing to cache for local files; don't write into node_modules

    const asr = await pipeline('automatic-speech-recognition', args.model, {
        dtype: args.dtype,
        device: 'cpu',
        local_files_only: true,
    });

    // Greedy, no timestamps. transformers.js rejects language/task for English-only
    // models (is_multilingual false), so they are only sent when asked for.
    const options = { do_sample: false, num_beams: 1, return_timestamps: false };
    if (args.language) Object.assign(options, { language: args.language, task: 'transcribe' });

    const results = [];
    for (const { id, path } of clips) {
        // The feature extractor keeps only the first 30 s of a clip, so longer clips are chunked.
        // Chunks are stitched by their timestamps: without them transformers.js merges chunks by
        // token overlap, which garbles unrelated neighbouring chunks. Only the text is kept.
        const audio = readF32(path);
        const chunking = audio.length > 30 * 16000 ? { chunk_length_s: 30, return_timestamps: true } : {};
        const { text } = await asr(audio, { ...options, ...chunking });
        results.push({ id, text });
    }
    await asr.dispose();

    process.stdout.write(JSON.stringify({ dtype: args.dtype, results }) + '\n');
}

main().catch((err) => {
    // A usage mistake needs the message, not a stack trace.
    console.error(err instanceof UsageError ? err.message : (err?.stack ?? String(err)));
    process.exit(err instanceof UsageError ? 2 : 1);
});
