// node validate.mjs MESH.glb: the Khronos glTF validator's report, in short.
import fs from 'fs';
import validator from 'gltf-validator';

const path = process.argv[2];
const report = await validator.validateBytes(new Uint8Array(fs.readFileSync(path)));
console.log(JSON.stringify({
  path, validator: report.validatorVersion, errors: report.issues.numErrors, warnings: report.issues.numWarnings,
  hints: report.issues.numHints, messages: report.issues.messages.slice(0, 8).map((m) => `${m.code} ${m.pointer ?? ''}`),
  vertices: report.info.totalVertexCount, triangles: report.info.totalTriangleCount,
  materials: report.info.materialCount, images: report.info.resources?.filter((r) => r.image).map((r) => r.image),
}, null, 1));
process.exit(report.issues.numErrors === 0 ? 0 : 1);
